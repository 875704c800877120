"""The end of a perturbation step, one policy each (θ is already restored when they run).

``PerturbationOptimizer._finish_step`` applies them in this order:

1. BatchNorm: the statistics of the step's first pass are written back
   (``StepContext.batchnorm.restore``);
2. distributed, :func:`reduce_per_rank`: with ``distributed="per_rank"`` the combined gradient,
   the losses and the reached flags are averaged over ranks (one all-reduce);
3. :func:`check_finite`: whether the losses and the gradient are finite (and, across ranks, which
   parameters some pass reached): the step's one host synchronisation (none with
   ``nonfinite="unchecked"`` on one rank);
4. AMP: the GradScaler's scale backs off or grows (``ScalerStep.update``);
5. the non-finite policy, :func:`skip_step`: raise, or skip the base step and count it;
6. :func:`clip_`: the combined gradient clipped to ``max_grad_norm``;
7. :func:`install_grads`: ``p.grad`` ← the combined gradient (None where no pass reached ``p``);
   then the base optimizer steps (or, inside ``compute_gradient``, the step is deferred).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tiltedsam._tensors import global_norm, norms
from tiltedsam.optim import _distributed as dist_ops
from tiltedsam.optim.context import StepContext


def reduce_per_rank(ctx: StepContext, grads: list[Tensor], losses: Tensor) -> Tensor:
    """m-sharpness (``distributed="per_rank"``): average ``grads`` in place, the losses and the
    reached flags over ranks in one all-reduce; returns the averaged losses."""
    if ctx.distributed != "per_rank":
        return losses
    flags = torch.tensor(ctx.reached, dtype=losses.dtype, device=losses.device)
    extras = dist_ops.average_(grads, torch.cat([losses.reshape(-1), flags]), ctx.process_group)
    ctx.reached_reduced = extras[losses.numel() :]
    return extras[: losses.numel()]


def check_finite(
    ctx: StepContext, grads: list[Tensor], losses: Tensor, nonfinite: str
) -> tuple[bool, list[bool]]:
    r"""(finite, reached): :math:`\sum_j L_j + \sum_i \lVert g_i\rVert` (plus the scaler's inf
    count) is finite, and which parameters were reached, fetched together in one host read."""
    scaler = ctx.scaler
    total = None
    if nonfinite != "unchecked" or scaler.active:
        total = losses.sum().float() + torch.stack(norms(grads)).float().sum()
        if scaler.found_inf is not None:
            total = total + scaler.found_inf.sum()
    if ctx.reached_reduced is not None:
        head = [] if total is None else [total.reshape(1).to(ctx.reached_reduced)]
        fetched = torch.cat([*head, ctx.reached_reduced]).tolist()
        reached = [flag > 0 for flag in fetched[len(head) :]]
        return (math.isfinite(fetched[0]) if head else True), reached
    return (bool(torch.isfinite(total)) if total is not None else True), ctx.reached


def skip_step(params: list[Tensor], nonfinite: str, scaler_active: bool, step: int,
              losses: Tensor) -> None:  # fmt: skip
    """A non-finite step: the gradients are dropped; ``"raise"`` raises (θ is intact), else the
    caller counts the skip."""
    for p in params:
        p.grad = None
    if nonfinite == "raise" and not scaler_active:
        raise FloatingPointError(
            f"non-finite loss or gradient at step {step} (perturbed losses {losses.tolist()}); "
            "parameters were left unchanged. Pass nonfinite='skip' to skip such steps instead."
        )


def clip_(grads: list[Tensor], max_norm: float | None) -> None:
    """Scale ``grads`` to global L2 norm at most ``max_norm``, as ``clip_grad_norm_`` does."""
    if max_norm is not None:
        norm = global_norm(grads)
        torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))


def install_grads(params: list[Tensor], grads: list[Tensor], reached: list[bool]) -> None:
    """``p.grad`` ← ``g``; a parameter no pass reached keeps ``grad = None``, so the base
    optimizer skips it (no weight decay, no momentum update), as it would without the wrapper."""
    for p, g, was_reached in zip(params, grads, reached, strict=True):
        p.grad = g if was_reached else None


__all__ = ["check_finite", "clip_", "install_grads", "reduce_per_rank", "skip_step"]
