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

Options every perturbation optimizer shares (keyword-only, passed through the subclasses):

* ``grad_scaler``: a ``torch.amp.GradScaler``; the closure calls ``scaler.scale(loss).backward()``
  and returns the *unscaled* loss.  Each pass is unscaled before use, an inf/NaN anywhere skips
  the step (counted in ``skipped_steps``) and the scale is updated once per step
  (:mod:`tiltedsam.optim._amp`).  Do not call ``scaler.step(opt)`` or ``scaler.update()``.
* ``max_grad_norm``: clip the *combined* gradient (the one handed to the base optimizer) to this
  global L2 norm, as ``torch.nn.utils.clip_grad_norm_`` would; the per-pass gradients that
  shape the perturbations are not clipped.
* ``distributed`` (``"auto"``, ``"off"``, ``"global"``, ``"per_rank"``) and ``process_group``:
  data parallelism without DDP's hooks (:mod:`tiltedsam.optim._distributed`); ``"global"``
  does one all-reduce per pass, ``"per_rank"`` one per step.

Two-phase use (trainers that call ``optimizer.step()`` themselves, e.g. Hugging Face ``Trainer``):
``compute_gradient(closure)`` runs the passes and leaves the combined gradient in ``p.grad`` with
θ restored; the next ``step()`` without a closure applies the base step to it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm, norms
from tiltedsam._validation import (
    check_choice,
    check_nonnegative,
    check_optimizer_class,
    check_positive,
)
from tiltedsam.optim import _distributed as dist_ops
from tiltedsam.optim._amp import ScalerStep, check_grad_scaler

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


def checked_loss(loss: object, expected: str = "the loss tensor") -> Tensor:
    """A closure's return value as a detached 0-dim tensor; a clear error for anything else."""
    if loss is None:
        raise TypeError(f"closure returned None; it must return {expected}")
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
    return loss.detach().reshape(())


def perturbation_defaults(rho: float, noise_radius: float) -> dict[str, float]:
    """The per-group settings of TSAM-like optimizers, checked (``rho``, ``noise_radius`` >= 0)."""
    return {
        "rho": check_nonnegative("rho", rho),
        "noise_radius": check_nonnegative("noise_radius", noise_radius),
    }


class PerturbationOptimizer(torch.optim.Optimizer):
    """Base class: wraps ``base_optimizer_cls(self.param_groups, **base_kwargs)``.

    Subclasses implement ``step(closure)`` with ``_begin_step``, ``_evaluate``, ``_restore`` and
    ``_finish_step``, and report ``passes_per_step`` (closure calls per step).
    """

    # Keywords every subclass passes through to this class (the registry lists them as options).
    SHARED_OPTIONS = ("grad_scaler", "max_grad_norm", "distributed", "process_group")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inner = cls.__dict__.get("step")
        if inner is None:
            return

        @functools.wraps(inner)
        def step(self, closure: Closure | None = None):
            if closure is None and self._prepared:
                return self._apply_prepared()
            return inner(self, closure)

        cls.step = step  # type: ignore[method-assign]

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
        grad_scaler: torch.amp.GradScaler | None = None,
        max_grad_norm: float | None = None,
        distributed: str = "auto",
        process_group: Any = None,
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
        self._prepared = False
        self._defer = False
        self.max_grad_norm = (
            None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm)
        )
        device = self._trainable_params()[0].device if self._trainable_params() else None
        self.grad_scaler = check_grad_scaler(grad_scaler, device)
        self._scaler_step = ScalerStep(self.grad_scaler)
        self.process_group = process_group
        self.distributed = dist_ops.resolve_mode(distributed, process_group)
        self._ranks_checked = False
        self._reached_reduced: Tensor | None = None
        self.generator = torch.Generator(device=device or "cpu")
        # Without a seed, follow torch.manual_seed (without drawing from the global stream).
        base_seed = (torch.initial_seed() if seed is None else int(seed)) % 2**63
        if self.distributed == "global":  # every rank draws the same noise
            base_seed = dist_ops.broadcast_seed(
                base_seed, device or torch.device("cpu"), process_group
            )
        elif self.distributed == "per_rank":  # each rank its own (m-sharpness)
            base_seed = (base_seed + dist_ops.rank(process_group)) % 2**63
        self.generator.manual_seed(base_seed)
        if self.distributed != "off":
            dist_ops.broadcast_params(self._trainable_params(), process_group)

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
                "loss.backward(); return loss  (do not zero gradients inside it). With "
                "torch.amp.GradScaler, pass grad_scaler=scaler to the optimizer and call "
                "opt.step(closure) instead of scaler.step(opt)"
            )
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        return closure

    def _begin_step(self, save_theta: bool = True) -> list[Tensor]:
        """Save θ into the ``theta`` buffer (unless ``save_theta`` is False: a step that never
        moves the parameters); returns the trainable parameters."""
        params = self._trainable_params()
        if not params:
            raise ValueError("the optimizer has no parameter with requires_grad=True")
        if self.distributed != "off" and not self._ranks_checked:
            dist_ops.check_ranks_agree(self._rank_settings(params), params[0].device,
                                       self.process_group)  # fmt: skip
            self._ranks_checked = True
        self._checked_buffers.clear()
        if save_theta:
            torch._foreach_copy_(self._buffer("theta"), params)
        self._pass_in_step = 0
        self._bn_snapshot = None
        self._reached = [False] * len(params)
        self._reached_reduced = None
        self._scaler_step.begin()
        return params

    def _rank_settings(self, params: list[Tensor]) -> dict[str, float]:
        """Numbers that must agree across ranks (checked once, on the first step)."""
        settings: dict[str, float] = {
            "trainable parameter tensors": len(params),
            "trainable parameter count": sum(p.numel() for p in params),
        }
        for key, value in self.defaults.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                settings[key] = float(value)
        for key in ("num_samples", "passes_per_step", "tilt", "delta"):
            value = getattr(self, key, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                settings[key] = float(value) if math.isfinite(value) else 1e300
        return settings

    def compute_gradient(self, closure: Closure) -> Tensor:
        """Run this optimizer's passes and leave the combined gradient in ``p.grad`` (θ restored)
        without stepping; the next ``step()`` without a closure applies the base step to it."""
        self._defer = True
        try:
            return self.step(closure)
        finally:
            self._defer = False

    def _apply_prepared(self) -> None:
        self._prepared = False
        self.base_optimizer.step()

    @torch.no_grad()
    def _restore(self) -> None:
        """Write θ back into the parameters, bit for bit."""
        torch._foreach_copy_(self._trainable_params(), self._buffer("theta"))

    def _evaluate(self, closure: Closure) -> Tensor:
        """One pass: clear grads, run the closure with grad enabled, check and return the loss.

        If the closure (or a check) raises, θ and the BatchNorm statistics are restored first:
        an exception never leaves the parameters at a perturbed point.
        """
        try:
            return self._evaluate_pass(closure)
        except BaseException:
            self._restore()
            if self._bn_snapshot is not None:
                torch._foreach_copy_(self._bn_buffers, self._bn_snapshot)
                self._bn_snapshot = None
            raise

    def _evaluate_pass(self, closure: Closure) -> Tensor:
        for p in self._trainable_params():
            p.grad = None
        with torch.enable_grad():
            loss = closure()
        self.closure_calls += 1
        loss = checked_loss(loss, "the loss tensor after calling backward()")
        params = self._trainable_params()
        has_grad = [p.grad is not None for p in params]
        if not any(has_grad):
            raise RuntimeError(
                "closure produced no gradient for any parameter: call loss.backward() inside it"
            )
        self._reached = [a or b for a, b in zip(self._reached, has_grad, strict=True)]
        if self.distributed == "global":
            loss = self._average_pass(params, has_grad, loss)
        self._scaler_step.unscale_([p.grad for p in params if p.grad is not None])
        if self._pass_in_step == 0 and self.bn_update == "first" and self._bn_buffers:
            self._bn_snapshot = [b.detach().clone() for b in self._bn_buffers]
        self._pass_in_step += 1
        return loss

    def _average_pass(self, params: list[Tensor], has_grad: list[bool], loss: Tensor) -> Tensor:
        """One all-reduce: gradients, reached flags and the loss, averaged over ranks."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flags = torch.tensor(has_grad, dtype=loss.dtype, device=loss.device)
        extras = dist_ops.average_([p.grad for p in params],
                                   torch.cat([loss.reshape(1), flags]), self.process_group)  # fmt: skip
        reached = extras[1:]
        self._reached_reduced = (
            reached
            if self._reached_reduced is None
            else torch.maximum(self._reached_reduced, reached)
        )
        return extras[0]

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
        if self.distributed == "per_rank":  # m-sharpness: average the combined result only
            flags = torch.tensor(self._reached, dtype=losses.dtype, device=losses.device)
            extras = dist_ops.average_(grads, torch.cat([losses.reshape(-1), flags]),
                                       self.process_group)  # fmt: skip
            losses, self._reached_reduced = extras[: losses.numel()], extras[losses.numel() :]
        # One host synchronisation: finiteness (and, with several ranks, the reached flags).
        scaler = self._scaler_step
        check = self.nonfinite != "unchecked" or scaler.active
        total = None
        if check:
            total = losses.sum().float() + torch.stack(norms(grads)).float().sum()
            if scaler.found_inf is not None:
                total = total + scaler.found_inf.sum()
        reached = self._reached
        if self._reached_reduced is not None:
            head = [] if total is None else [total.reshape(1).to(self._reached_reduced)]
            fetched = torch.cat([*head, self._reached_reduced]).tolist()
            reached = [flag > 0 for flag in fetched[len(head) :]]
            finite = math.isfinite(fetched[0]) if head else True
        else:
            finite = bool(torch.isfinite(total)) if total is not None else True
        scaler.update(torch.tensor(0.0 if finite else 1.0))
        if not finite:
            for p in params:
                p.grad = None
            if self.nonfinite == "raise" and not scaler.active:
                raise FloatingPointError(
                    f"non-finite loss or gradient at step {self.step_count - 1} "
                    f"(perturbed losses {losses.tolist()}); parameters were left unchanged. "
                    "Pass nonfinite='skip' to skip such steps instead."
                )
            self.skipped_steps += 1
            return False
        if self.max_grad_norm is not None:
            norm = global_norm(grads)
            torch._foreach_mul_(grads, torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0))
        # A parameter that no pass reached keeps grad None, so the base optimizer skips it
        # (no weight decay, no momentum update), exactly as it would without the wrapper.
        for p, g, was_reached in zip(params, grads, reached, strict=True):
            p.grad = g if was_reached else None
        if self._defer:
            self._prepared = True
            return True
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
