r"""The step context: what one step of a perturbation optimizer shows the code that shapes it.

An optimizer's ``step`` starts with ``ctx = self._begin_step()``; the :class:`StepContext` it
gets (one per optimizer, reused every step) is all that its own code, the samplers
(:mod:`tiltedsam.samplers`) and TSAM's batched path (:mod:`tiltedsam.optim.batched`) touch:

* ``params`` (the trainable parameters, in a fixed order), ``groups`` (each param group with its
  trainable parameters), ``theta`` (θ, saved when the step began), ``generator`` (the
  perturbation RNG), :meth:`radii` (a per-group setting such as ``rho``) and :meth:`blocks`;
* :meth:`evaluate` (a pass with backward) and :meth:`score` (a pass for the loss only): the one
  guarded evaluation every pass of every method goes through.  It clears the gradients, runs the
  closure, counts the call, checks the loss, averages over ranks (``distributed="global"``),
  unscales (GradScaler) and keeps the first pass's BatchNorm statistics; if anything raises, θ
  and the BatchNorm statistics are restored (as they were before the step) before the exception
  leaves;
* :meth:`grads`, :meth:`restore` (θ back, bit for bit), :meth:`buffer` (a parameter-shaped
  buffer kept across steps) and :meth:`count` (passes made elsewhere, e.g. by ``vmap``).

The end of the step (BatchNorm, distributed, AMP, non-finite policy, clipping, the base step)
is :mod:`tiltedsam.optim.policies`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from tiltedsam._norm_layers import norm_layers
from tiltedsam.optim import _distributed as dist_ops
from tiltedsam.optim._amp import ScalerStep
from tiltedsam.optim.groups import check_dense_grads

Closure = Callable[[], Tensor]


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


def batchnorm_buffers(model: nn.Module | None) -> list[Tensor]:
    """The running statistics of every BatchNorm (or InstanceNorm) layer of ``model`` that
    tracks them."""
    buffers: list[Tensor] = []
    for module in norm_layers(model):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buf = getattr(module, name, None)
            if buf is not None:
                buffers.append(buf)
    return buffers


class BatchNormPolicy:
    """``"first"``: the statistics after a step's first pass are kept (snapshotted then, written
    back at the end of the step); ``"every"``: every pass updates them.  A step that raises or is
    skipped, or whose statistics came out non-finite (a pass dropped by ``"skip_sample"``),
    leaves them as they were before it (:meth:`rollback`)."""

    def __init__(self, model: nn.Module | None, mode: str) -> None:
        self.buffers = batchnorm_buffers(model)
        self.mode = mode
        self.snapshot: list[Tensor] | None = None
        self.before: list[Tensor | None] | None = None

    def begin(self) -> None:
        """A step starts: keep the statistics as they are (what :meth:`rollback` writes back;
        a lazy layer's buffers before its first forward have nothing to keep: None)."""
        self.snapshot = None
        if self.buffers:
            self.before = [None if is_lazy(b) else b.detach().clone() for b in self.buffers]

    def after_pass(self, index: int) -> None:
        if index == 0 and self.mode == "first" and self.buffers:
            self.snapshot = [b.detach().clone() for b in self.buffers]

    def restore(self) -> None:
        """The end of a step: the first pass's statistics (``"first"``)."""
        if self.snapshot is not None:
            torch._foreach_copy_(self.buffers, self.snapshot)
            self.snapshot = None

    def rollback(self) -> None:
        """The statistics as they were when the step began."""
        if self.before is not None:
            for buffer, saved in zip(self.buffers, self.before, strict=True):
                if saved is not None and not is_lazy(buffer):
                    buffer.copy_(saved)
        self.snapshot = None

    def total(self) -> Tensor | None:
        """The sum of the floating-point statistics (finite iff all are); None without any."""
        floats = [b for b in self.buffers if not is_lazy(b) and b.is_floating_point()]
        return torch.stack([b.float().sum() for b in floats]).sum() if floats else None


class StepContext:
    """The step in progress of one perturbation optimizer (see the module doc)."""

    def __init__(
        self,
        generator: torch.Generator,
        batchnorm: BatchNormPolicy,
        scaler: ScalerStep,
        distributed: str = "off",
        process_group: Any = None,
    ) -> None:
        self.generator = generator
        self.batchnorm = batchnorm
        self.scaler = scaler
        self.distributed = distributed
        self.process_group = process_group
        self.params: list[Tensor] = []
        self.groups: list[tuple[dict[str, Any], list[Tensor]]] = []
        self.calls = 0  # closure calls so far (the optimizer's ``closure_calls``)
        self.reached: list[bool] = []  # per parameter: some pass of this step gave it a gradient
        self.reached_reduced: Tensor | None = None  # the same, reduced over ranks
        self._buffers: dict[str, list[Tensor]] = {}
        self._checked: set[str] = set()
        self._pass = 0
        self._saved = False  # θ saved in this step (what a rollback may write back)

    # ------------------------------------------------------------------ the step's parameters
    def begin(self, param_groups: list[dict[str, Any]], save_theta: bool = True) -> list[Tensor]:
        """Take the trainable parameters of ``param_groups`` for this step and, with
        ``save_theta``, copy them into :attr:`theta`; returns ``params``.  A frozen parameter
        (``requires_grad=False``) loses any ``grad`` left from before it was frozen, as
        ``zero_grad()`` would have cleared it: the base optimizer must not apply it again."""
        groups = []
        for group in param_groups:
            params = []
            for p in group["params"]:
                if p.requires_grad:
                    params.append(p)
                elif p.grad is not None:  # frozen after a backward: not applied again
                    p.grad = None
            if params:
                groups.append((group, params))
        self.groups = groups
        self.params = [p for _, params in groups for p in params]
        if not self.params:
            raise ValueError("the optimizer has no parameter with requires_grad=True")
        self._checked.clear()
        self._pass = 0
        self._saved = False
        self.batchnorm.begin()
        self.reached = [False] * len(self.params)
        self.reached_reduced = None
        self.scaler.begin()
        if save_theta:
            self.save_theta()
        return self.params

    def save_theta(self) -> None:
        """θ ← the current parameters."""
        torch._foreach_copy_(self.theta, self.params)
        self._saved = True

    @property
    def theta(self) -> list[Tensor]:
        """θ as saved when the step began (a buffer aligned with ``params``)."""
        return self.buffer("theta")

    def radii(self, key: str) -> list[float]:
        """``group[key]`` of each group in ``groups`` (e.g. ``"rho"``, ``"noise_radius"``)."""
        return [float(group[key]) for group, _ in self.groups]

    def blocks(
        self, tensors: list[Tensor]
    ) -> Iterator[tuple[dict[str, Any], list[Tensor], list[Tensor]]]:
        """``(group, params, block)`` per group, ``block`` the slice of ``tensors`` (aligned
        with ``params``) that belongs to that group."""
        start = 0
        for group, params in self.groups:
            yield group, params, tensors[start : start + len(params)]
            start += len(params)

    def buffer(self, name: str) -> list[Tensor]:
        """A parameter-shaped buffer list, allocated once and kept across steps (checked
        against the parameters once per step)."""
        buf = self._buffers.get(name)
        if buf is not None and name in self._checked:
            return buf
        params = self.params
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
        self._checked.add(name)
        return buf

    @property
    def buffer_count(self) -> int:
        return len(self._buffers)

    # ------------------------------------------------------------------ passes
    @torch.no_grad()
    def restore(self) -> None:
        """Write θ back into the parameters, bit for bit."""
        torch._foreach_copy_(self.params, self.theta)

    def grads(self, params: list[Tensor] | None = None) -> list[Tensor]:
        """Current gradients of ``params`` (default: all; zeros where a pass reached none)."""
        params = self.params if params is None else params
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

    def count(self, passes: int) -> None:
        """Count ``passes`` closure calls made without :meth:`evaluate` (the batched path)."""
        self.calls += passes

    def evaluate(self, closure: Closure) -> Tensor:
        """One pass at the current parameters: clear the gradients, run the closure with grad
        enabled (it calls backward), check and return the loss (see the module doc)."""
        try:
            return self._backward_pass(closure)
        except BaseException:
            self._rollback()
            raise

    def score(self, closure: Closure, forward_only: bool) -> Tensor:
        """One pass for the loss only, no gradient left behind: ``closure(backward=False)``
        under ``no_grad`` if ``forward_only``, else the closure as is, its gradient dropped.
        Counted, reduced over ranks and guarded like :meth:`evaluate`."""
        try:
            return self._scoring_pass(closure, forward_only)
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._saved:  # a step that never saved θ (ERM) never moved the parameters
            self.restore()
        self.batchnorm.rollback()

    def _backward_pass(self, closure: Closure) -> Tensor:
        for p in self.params:
            p.grad = None
        with torch.enable_grad():
            loss = closure()
        return self.record_pass(checked_loss(loss, "the loss tensor after calling backward()"))

    def record_pass(self, loss: Tensor | None) -> Tensor | None:
        """The work after a pass whose backward has run (by the closure, or by the caller of
        a two-phase API such as ``SAM.first_step``): count it, check that it reached some
        parameter, average it over ranks (``distributed="global"``), unscale (GradScaler), keep
        the first pass's BatchNorm statistics.  ``loss`` may be None when it is not known."""
        params = self.params
        self.calls += 1
        if self._pass == 0:  # once a step: a sparse gradient would fail deep in a norm
            check_dense_grads(params)
        has_grad = [p.grad is not None for p in params]
        if not any(has_grad):
            raise RuntimeError(
                "closure produced no gradient for any parameter: call loss.backward() inside it"
            )
        self.reached = [a or b for a, b in zip(self.reached, has_grad, strict=True)]
        if self.distributed == "global":
            known = loss if loss is not None else torch.zeros((), device=params[0].device)
            averaged = self._average_pass(params, has_grad, known)
            loss = None if loss is None else averaged
        self.scaler.unscale_([p.grad for p in params if p.grad is not None])
        self.batchnorm.after_pass(self._pass)
        self._pass += 1
        return loss

    def _scoring_pass(self, closure: Closure, forward_only: bool) -> Tensor:
        if forward_only:
            with torch.no_grad():
                loss = closure(backward=False)  # type: ignore[call-arg]
        else:
            params = self.params
            for p in params:
                p.grad = None
            with torch.enable_grad():
                loss = closure()
            for p in params:
                p.grad = None
        self.calls += 1
        loss = checked_loss(loss)
        if self.distributed == "global":  # every rank scores (and so resamples) alike
            loss = dist_ops.average_([], loss.reshape(1), self.process_group).reshape(())
        self.batchnorm.after_pass(self._pass)
        self._pass += 1
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
        self.reached_reduced = (
            reached
            if self.reached_reduced is None
            else torch.maximum(self.reached_reduced, reached)
        )
        return extras[0]


__all__ = ["BatchNormPolicy", "Closure", "StepContext", "batchnorm_buffers", "checked_loss"]
