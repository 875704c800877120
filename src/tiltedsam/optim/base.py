"""Shared machinery of the perturbation optimizers (SAM, TSAM, ...).

A perturbation optimizer wraps a real ``torch.optim`` optimizer (the *base*) and owns nothing but
the recipe for the gradient it hands to it.  Each ``step(closure)`` reads like davda54/sam::

    ctx = self._begin_step()            # θ saved (one buffer, reused across steps)
    loss = ctx.evaluate(closure)        # a pass: grads cleared, closure(), checked, counted
    ...                                 # move the parameters, evaluate again, combine ctx.grads()
    ctx.restore()                       # θ back, bit for bit
    self._finish_step(grads, losses)    # the end-of-step policies, then base.step() once

so weight decay, momentum, param groups and LR schedulers behave exactly as with the base
optimizer alone.  The closure computes the loss, calls ``backward`` and returns the loss; it must
not zero gradients itself (so it may accumulate micro-batches).  The pass machinery is
:class:`~tiltedsam.optim.context.StepContext` (what samplers and the batched path see too); the
end of the step is :mod:`tiltedsam.optim.policies`.

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
θ restored; the next ``step()`` applies the base step to it (none if the non-finite policy or
the GradScaler skipped the step; a closure given to that ``step`` is called once, without
gradients, for its value: Lightning's hooks).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tiltedsam._validation import (
    check_choice,
    check_nonnegative,
    check_optimizer_class,
    check_positive,
)
from tiltedsam.optim import _distributed as dist_ops
from tiltedsam.optim import policies
from tiltedsam.optim._amp import ScalerStep, check_grad_scaler
from tiltedsam.optim.checkpointing import CheckpointState, from_legacy_state_dict
from tiltedsam.optim.context import BatchNormPolicy, Closure, StepContext, checked_loss
from tiltedsam.optim.diagnostics import StepDiagnostics
from tiltedsam.optim.groups import (
    GroupCheck,
    check_dense_real,
    check_group_options,
    group_params,
    optimizer_wide_options,
    option_checks,
    recheck_group_options,
)

NONFINITE_POLICIES = ("raise", "skip", "unchecked")


def _check_base_keywords(cls: type, base_cls: type, base_kwargs: dict[str, Any]) -> None:
    """Keywords that neither the optimizer nor its base optimizer takes: named, with the closest
    spelling (``TSAM(..., num_sample=3)`` would otherwise fail in SGD's constructor)."""
    import difflib
    import inspect

    base = inspect.signature(base_cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in base.values()):
        return  # the base takes anything: its own check applies
    unknown = sorted(set(base_kwargs) - set(base))
    if unknown:
        known = sorted((set(base) | optimizer_wide_options(cls, base_cls)) - {"self", "params"})
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TypeError(
            f"{cls.__name__}: unknown keyword(s) {unknown} (neither {cls.__name__}'s nor "
            f"{base_cls.__name__}'s){hint}"
        )


BN_POLICIES = ("first", "every")


# The per-group settings of TSAM-like optimizers and their checks.
PERTURBATION_CHECKS = option_checks(rho=check_nonnegative, noise_radius=check_nonnegative)


def perturbation_defaults(rho: float, noise_radius: float) -> dict[str, float]:
    """The per-group settings of TSAM-like optimizers, checked (``rho``, ``noise_radius`` >= 0)."""
    return {"rho": check_nonnegative("rho", rho),
            "noise_radius": check_nonnegative("noise_radius", noise_radius)}  # fmt: skip


class PerturbationOptimizer(CheckpointState, torch.optim.Optimizer):
    """Base class: wraps ``base_optimizer_cls(self.param_groups, **base_kwargs)``.

    Subclasses implement ``step(closure)`` with ``ctx = self._begin_step()``, the context's
    ``evaluate``/``grads``/``restore`` and ``self._finish_step(grads, losses)``, and report
    ``passes_per_step`` (closure calls per step).  ``opt.param_groups`` and ``opt.state`` are the
    base optimizer's own (torch's contract); ``opt.context`` is the :class:`StepContext`.
    """

    # Keywords every subclass passes through to this class (the registry lists them as options).
    SHARED_OPTIONS = ("grad_scaler", "max_grad_norm", "distributed", "process_group")
    # Per-group options and the constructor's check of each: every param group is checked with
    # them (constructor groups, add_param_group, load_state_dict; tiltedsam.optim.groups).
    group_checks: ClassVar[Mapping[str, GroupCheck]] = option_checks()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inner = cls.__dict__.get("step")
        if inner is None:
            return

        @functools.wraps(inner)
        def step(self, closure: Closure | None = None):
            if self._prepared:
                return self._apply_prepared(closure)
            return inner(self, closure)

        cls.step = step  # type: ignore[method-assign]
        # torch wraps ``cls.step`` with the step hooks once an instance exists; the passes that
        # are not the trainer's step (compute_gradient, a subclass running its parent's step)
        # call this one, so the hooks fire once per step, after the parameters changed.
        cls._step_without_hooks = step

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
        _check_base_keywords(type(self), base_optimizer_cls, base_kwargs)
        # What a param group may not set (checked as each group enters, from the next line on).
        self._wide_options = optimizer_wide_options(type(self), base_optimizer_cls)
        super().__init__(params, {**defaults, **base_kwargs})
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        # torch's contract: the groups and the state are the base optimizer's own objects, so
        # schedulers, checkpoint code and users that read ``opt.state`` see the momenta.
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)
        self.nonfinite = nonfinite
        self.step_count = 0
        self.skipped_steps = 0
        self.last_step: StepDiagnostics | None = None  # what the last step saw
        # After compute_gradient: "step" (the base step is pending), "skip" (the step was
        # skipped by the non-finite policy or AMP: the next step() takes none) or None.
        self._prepared: str | None = None
        self._defer = False
        self.max_grad_norm = (
            None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm)
        )
        device = self._trainable_params()[0].device if self._trainable_params() else None
        self.grad_scaler = check_grad_scaler(grad_scaler, device)
        self.process_group = process_group
        self.distributed = dist_ops.resolve_mode(distributed, process_group)
        self._ranks_checked = False
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
        self.context = StepContext(
            self.generator, BatchNormPolicy(model, bn_update), ScalerStep(self.grad_scaler),
            self.distributed, process_group,
        )  # fmt: skip
        if self.distributed != "off":
            dist_ops.broadcast_params(self._trainable_params(), process_group)

    # ------------------------------------------------------------------ copy and pickle
    def __getstate__(self) -> dict[str, Any]:
        """All but, as torch, the hooks and an LR scheduler's ``step`` wrapper (it refers to the
        original); torch's keeps only defaults, state and groups: a copy without its base."""
        if self.process_group is not None:
            raise TypeError(
                "an optimizer built with an explicit process_group cannot be copied or pickled "
                "(a ProcessGroup cannot): build a new one, and load_state_dict() to carry state"
            )
        return {
            key: value
            for key, value in self.__dict__.items()
            if key != "step" and not (key.startswith("_optimizer_") and key.endswith("_hooks"))
        }

    # ------------------------------------------------------------------ param bookkeeping
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, after checking the group's perturbation options (as the
        constructor checks them) and that its parameters are dense and real."""
        index = len(self.param_groups)
        check_group_options(param_group, index, self.group_checks, self.defaults,
                            self._wide_options, type(self).__name__)  # fmt: skip
        check_dense_real(group_params(param_group), index)
        if not hasattr(self, "base_optimizer"):
            super().add_param_group(param_group)
            return
        for key, value in self.defaults.items():
            param_group.setdefault(key, value)
        self.base_optimizer.add_param_group(param_group)

    def _trainable_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    @property
    def extra_buffers(self) -> int:
        """How many parameter-sized buffers this optimizer holds beyond the base optimizer's state."""
        return self.context.buffer_count

    @property
    def bn_update(self) -> str:
        """``"first"`` or ``"every"``: which passes of a step update BatchNorm statistics."""
        return self.context.batchnorm.mode

    @property
    def closure_calls(self) -> int:
        """Closure calls (passes) so far, forward-only ones included."""
        return self.context.calls

    @closure_calls.setter
    def closure_calls(self, value: int) -> None:
        self.context.calls = int(value)

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

    def _begin_step(self, save_theta: bool = True) -> StepContext:
        """Start a step: the context with this step's parameters and, unless ``save_theta`` is
        False (a step that never moves the parameters), θ saved."""
        if self.distributed != "off" and not self._ranks_checked:
            params = self._trainable_params()
            if params:
                dist_ops.check_ranks_agree(self._rank_settings(params), params[0].device,
                                           self.process_group)  # fmt: skip
                self._ranks_checked = True
        self._prepared = None  # a step with a closure replaces a pending compute_gradient
        recheck_group_options(self.param_groups, self.group_checks)  # a scheduler may set them
        self.context.begin(self.param_groups, save_theta)
        return self.context

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
        without stepping; the next ``step()`` applies the base step to it (none if the step was
        skipped: ``nonfinite="skip"``, an AMP inf).  A closure given to that ``step`` is called
        once, without gradients, and its value returned (trainers such as Lightning run their
        ``on_before_optimizer_step`` hooks in it, so they fire once per step and see the combined
        gradient)."""
        self._defer = True
        try:
            return type(self)._step_without_hooks(self, closure)
        finally:
            self._defer = False

    def _diagnose(self, losses: Tensor, objective: Tensor, took_step: bool, **extra: Any) -> Tensor:
        """Record ``last_step`` (:class:`~tiltedsam.optim.diagnostics.StepDiagnostics`) and
        return ``objective``, the value of ``step``."""
        self.last_step = StepDiagnostics(
            losses=losses, objective=objective, took_step=took_step, **extra
        )
        return objective

    def _apply_prepared(self, closure: Closure | None) -> Tensor | None:
        """The base step with the gradient ``compute_gradient`` left in ``p.grad``.  A closure
        given here (Lightning passes one to every ``step``, wrapped in its hooks) is called once,
        without gradients, for its return value: never another pass."""
        loss = None
        if closure is not None:
            try:
                with torch.no_grad():
                    loss = closure()
            except RuntimeError as err:
                if "does not require grad" not in str(err):
                    raise
                raise RuntimeError(
                    "step(closure) after compute_gradient() applies the prepared gradient and "
                    "calls the closure once without gradients, for its loss only: give it a "
                    "closure that does not call backward(), or call step() without one"
                ) from err
        prepared, self._prepared = self._prepared, None
        if prepared == "step":
            self.base_optimizer.step()
        return loss

    @torch.no_grad()
    def _finish_step(self, grads: list[Tensor], losses: Tensor) -> bool:
        """θ is already restored: the end-of-step policies (:mod:`tiltedsam.optim.policies`),
        then the base step with ``grads``.  Returns whether the base step was taken."""
        ctx = self.context
        ctx.batchnorm.restore()  # 1. BatchNorm: the first pass's statistics
        self.step_count += 1
        losses = policies.reduce_per_rank(ctx, grads, losses)  # 2. distributed
        # 3. the one host sync: finite losses, gradient and BatchNorm statistics; reached flags
        finite, reached, stats_finite = policies.check_finite(ctx, grads, losses, self.nonfinite)
        ctx.scaler.update(torch.tensor(0.0 if finite else 1.0))  # 4. AMP
        if not (finite and stats_finite):  # no statistics from a skipped step or a NaN pass
            ctx.batchnorm.rollback()
        if not finite:  # 5. the non-finite policy
            policies.skip_step(ctx, grads, self.nonfinite, self.step_count - 1, losses)
            self.skipped_steps += 1
            if self._defer:  # the trainer's step() that follows takes no step either
                self._prepared = "skip"
            return False
        policies.clip_(grads, self.max_grad_norm)  # 6. clipping
        policies.install_grads(ctx.params, grads, reached)  # 7. the combined gradient
        if self._defer:
            self._prepared = "step"
            return True
        self.base_optimizer.step()
        return True

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base={type(self.base_optimizer).__name__}, "
            + ", ".join(f"{k}={v!r}" for k, v in self._repr_items())
            + ")"
        )

    def _repr_items(self) -> list[tuple[str, Any]]:
        return []


__all__ = [
    "BN_POLICIES",
    "NONFINITE_POLICIES",
    "PerturbationOptimizer",
    "checked_loss",
    "from_legacy_state_dict",
]
