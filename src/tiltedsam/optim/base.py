"""Shared machinery of the perturbation optimizers (SAM, TSAM, ...).

A perturbation optimizer wraps a real ``torch.optim`` optimizer (the *base*) and owns nothing but
the recipe for the gradient it hands to it.  Each ``step(closure)``:

1. saves θ (one parameter-sized buffer, reused across steps);
2. calls the closure at one or more perturbed points ``θ + ε`` (each call is a *pass*: the
   optimizer sets ``p.grad = None`` first; the closure computes the loss, calls ``backward`` and
   returns the loss; it must not zero gradients itself, so it may accumulate micro-batches);
3. restores θ exactly (``copy_`` from the saved buffer), writes the combined gradient into
   ``p.grad`` and calls ``base.step()`` once, so weight decay, momentum, param groups and LR
   schedulers behave exactly as with the base optimizer alone.

BatchNorm: with ``model=`` given, running statistics are updated by the first pass of a step
only: the buffers of every BatchNorm module are snapshotted after that pass and written back
after the last one (``bn_update="first"``, the default).  ``bn_update="every"`` leaves every
pass free to update them (what the official TSAM code does).  Without ``model=`` BatchNorm is not
touched.

Non-finite values (``nonfinite=``): ``"raise"`` (default) raises ``FloatingPointError`` and
``"skip"`` skips the base step (counted in ``skipped_steps``); in both cases θ is restored first,
so parameters are never written with NaN/inf.  The check is one host synchronisation per step
(on the summed losses and the gradient norm); ``"unchecked"`` removes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_choice, check_optimizer_class

Closure = Callable[[], Tensor]

NONFINITE_POLICIES = ("raise", "skip", "unchecked")
BN_POLICIES = ("first", "every")


def _batchnorm_buffers(model: nn.Module | None) -> list[Tensor]:
    if model is None:
        return []
    buffers: list[Tensor] = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                buf = getattr(module, name, None)
                if buf is not None:
                    buffers.append(buf)
    return buffers


class PerturbationOptimizer(torch.optim.Optimizer):
    """Base class: wraps ``base_optimizer_cls(self.param_groups, **base_kwargs)``.

    Subclasses implement ``step(closure)`` with ``_begin_step``, ``_evaluate``, ``_restore`` and
    ``_finish_step``, and report ``passes_per_step`` (closure calls per step).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        defaults: dict[str, Any],
        *,
        model: nn.Module | None = None,
        bn_update: str = "first",
        nonfinite: str = "raise",
        seed: int | None = None,
        **base_kwargs: Any,
    ) -> None:
        check_optimizer_class("base_optimizer_cls", base_optimizer_cls)
        check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)
        check_choice("bn_update", bn_update, BN_POLICIES)
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        overlap = set(defaults) & set(base_kwargs)
        if overlap:
            raise TypeError(f"keyword(s) {sorted(overlap)} given twice")
        super().__init__(params, {**defaults, **base_kwargs})
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.nonfinite = nonfinite
        self.bn_update = bn_update
        self._bn_buffers = _batchnorm_buffers(model)
        self._bn_snapshot: list[Tensor] | None = None
        self._buffers: dict[str, list[Tensor]] = {}
        self._checked_buffers: set[str] = set()
        self._pass_in_step = 0
        self._reached: list[bool] = []
        self.step_count = 0
        self.skipped_steps = 0
        self.closure_calls = 0
        device = self._trainable_params()[0].device if self._trainable_params() else None
        self.generator = torch.Generator(device=device or "cpu")
        # Without a seed, follow torch.manual_seed (without drawing from the global stream).
        self.generator.manual_seed(torch.initial_seed() if seed is None else int(seed))

    # ------------------------------------------------------------------ param bookkeeping
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):
            super().add_param_group(param_group)
            return
        for key, value in self.defaults.items():
            param_group.setdefault(key, value)
        self.base_optimizer.add_param_group(param_group)

    def _trainable_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _group_views(self) -> list[tuple[dict[str, Any], list[Tensor]]]:
        """Each param group with its trainable parameters, in a fixed order."""
        views = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if params:
                views.append((group, params))
        return views

    def _group_blocks(self, tensors: list[Tensor]):
        """Yield ``(group, params, block)`` per param group, ``block`` being the slice of
        ``tensors`` (aligned with ``_trainable_params()``) that belongs to that group."""
        start = 0
        for group, params in self._group_views():
            yield group, params, tensors[start : start + len(params)]
            start += len(params)

    def _buffer(self, name: str) -> list[Tensor]:
        """A reusable parameter-shaped buffer list (allocated once, kept across steps).

        Checked against the parameters once per step (``_begin_step`` resets the check)."""
        buf = self._buffers.get(name)
        if buf is not None and name in self._checked_buffers:
            return buf
        params = self._trainable_params()
        if (
            buf is None
            or len(buf) != len(params)
            or any(
                b.shape != p.shape or b.dtype != p.dtype or b.device != p.device
                for b, p in zip(buf, params, strict=True)
            )
        ):
            buf = [torch.empty_like(p, memory_format=torch.preserve_format) for p in params]
            self._buffers[name] = buf
        self._checked_buffers.add(name)
        return buf

    @property
    def extra_buffers(self) -> int:
        """How many parameter-sized buffers this optimizer holds beyond the base optimizer's state."""
        return len(self._buffers)

    # ------------------------------------------------------------------ the pass machinery
    @staticmethod
    def _require_closure(closure: Closure | None) -> Closure:
        if closure is None:
            raise TypeError(
                "step() requires a closure: def closure(): loss = loss_fn(model(x), y); "
                "loss.backward(); return loss  (do not zero gradients inside it)"
            )
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        return closure

    def _begin_step(self) -> list[Tensor]:
        """Save θ into the ``theta`` buffer; returns the trainable parameters."""
        params = self._trainable_params()
        if not params:
            raise ValueError("the optimizer has no parameter with requires_grad=True")
        self._checked_buffers.clear()
        torch._foreach_copy_(self._buffer("theta"), params)
        self._pass_in_step = 0
        self._bn_snapshot = None
        self._reached = [False] * len(params)
        return params

    @torch.no_grad()
    def _restore(self) -> None:
        """Write θ back into the parameters, bit for bit."""
        torch._foreach_copy_(self._trainable_params(), self._buffer("theta"))

    def _evaluate(self, closure: Closure) -> Tensor:
        """One pass: clear grads, run the closure with grad enabled, check and return the loss."""
        for p in self._trainable_params():
            p.grad = None
        with torch.enable_grad():
            loss = closure()
        self.closure_calls += 1
        if loss is None:
            raise TypeError(
                "closure returned None; it must return the loss tensor after calling backward()"
            )
        if not isinstance(loss, Tensor):
            if isinstance(loss, (int, float)) and not isinstance(loss, bool):
                loss = torch.tensor(float(loss))
            else:
                raise TypeError(f"closure must return a scalar loss tensor, got {type(loss)}")
        if loss.numel() != 1:
            raise ValueError(
                f"closure must return a scalar loss, got shape {tuple(loss.shape)}; "
                "reduce it (e.g. .mean()) before returning"
            )
        has_grad = [p.grad is not None for p in self._trainable_params()]
        if not any(has_grad):
            raise RuntimeError(
                "closure produced no gradient for any parameter: call loss.backward() inside it"
            )
        self._reached = [a or b for a, b in zip(self._reached, has_grad, strict=True)]
        if self._pass_in_step == 0 and self.bn_update == "first" and self._bn_buffers:
            self._bn_snapshot = [b.detach().clone() for b in self._bn_buffers]
        self._pass_in_step += 1
        return loss.detach().reshape(())

    def _grads(self, params: list[Tensor]) -> list[Tensor]:
        """Current gradients of ``params`` (zeros for a parameter the pass did not reach)."""
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def _finish_step(self, params: list[Tensor], grads: list[Tensor], losses: Tensor) -> bool:
        """θ is already restored.  Check finiteness, install ``grads`` and step the base optimizer.

        Returns whether the base step was taken.
        """
        if self._bn_snapshot is not None:
            torch._foreach_copy_(self._bn_buffers, self._bn_snapshot)
            self._bn_snapshot = None
        self.step_count += 1
        if self.nonfinite != "unchecked":
            grad_norms = torch._foreach_norm(grads)
            total = losses.sum().float() + torch.stack(grad_norms).float().sum()
            if not bool(torch.isfinite(total)):
                for p in params:
                    p.grad = None
                if self.nonfinite == "raise":
                    raise FloatingPointError(
                        f"non-finite loss or gradient at step {self.step_count - 1} "
                        f"(perturbed losses {losses.tolist()}); parameters were left unchanged. "
                        "Pass nonfinite='skip' to skip such steps instead."
                    )
                self.skipped_steps += 1
                return False
        # A parameter that no pass reached keeps grad None, so the base optimizer skips it
        # (no weight decay, no momentum update), exactly as it would without the wrapper.
        for p, g, reached in zip(params, grads, self._reached, strict=True):
            p.grad = g if reached else None
        self.base_optimizer.step()
        return True

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def state_dict(self) -> dict[str, Any]:
        """Base-optimizer state (momenta, param groups) plus step count and sampler RNG state."""
        return {
            "base": self.base_optimizer.state_dict(),
            "perturbation": {
                "step_count": self.step_count,
                "skipped_steps": self.skipped_steps,
                "rng_state": self.generator.get_state(),
                **self._extra_state(),
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or not {"base", "perturbation"} <= state_dict.keys():
            raise ValueError(
                f"{type(self).__name__}.load_state_dict expects the dict from its own state_dict() "
                "with keys 'base' and 'perturbation'"
            )
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups
        extra = dict(state_dict["perturbation"])
        self.step_count = int(extra.pop("step_count"))
        self.skipped_steps = int(extra.pop("skipped_steps", 0))
        self.generator.set_state(extra.pop("rng_state"))
        self._load_extra_state(extra)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base={type(self.base_optimizer).__name__}, "
            + ", ".join(f"{k}={v!r}" for k, v in self._repr_items())
            + ")"
        )

    def _repr_items(self) -> list[tuple[str, Any]]:
        return []


__all__ = ["BN_POLICIES", "NONFINITE_POLICIES", "PerturbationOptimizer", "global_norm"]
