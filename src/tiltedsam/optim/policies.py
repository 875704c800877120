"""The end of a perturbation step, one policy each (θ is already restored when they run).

``PerturbationOptimizer._finish_step`` applies them in this order:

1. BatchNorm: the statistics of the step's first pass are written back
   (``StepContext.batchnorm.restore``); those from before the step instead
   (``batchnorm.rollback``) when the step is skipped or they came out non-finite;
2. distributed, :func:`reduce_per_rank`: with ``distributed="per_rank"`` the combined gradient,
   the losses and the reached flags are averaged over ranks (one all-reduce);
3. :func:`check_finite`: whether the losses, the gradient and the BatchNorm statistics are finite
   (and, across ranks, which parameters some pass reached): the step's one host synchronisation
   (none with ``nonfinite="unchecked"`` on one rank);
4. AMP: the GradScaler's scale backs off or grows (``ScalerStep.update``);
5. the non-finite policy, :func:`skip_step`: raise, or skip the base step and count it;
6. :func:`clip_`: the combined gradient clipped to ``max_grad_norm``;
7. :func:`install_grads`: ``p.grad`` ← the combined gradient (None where no pass reached ``p``);
   then the base optimizer steps (or, inside ``compute_gradient``, the step is deferred).
"""

from __future__ import annotations

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
) -> tuple[bool, list[bool], bool]:
    r"""(finite, reached, statistics finite): :math:`\sum_j L_j + \sum_i \lVert g_i\rVert` (plus
    the scaler's inf count) is finite, which parameters were reached, and whether the BatchNorm
    statistics the step leaves are finite, fetched together in one host read."""
    scaler = ctx.scaler
    flags = None  # 1 if the losses and the gradient are finite, + 2 if the statistics are
    if nonfinite != "unchecked" or scaler.active:
        total = losses.sum().float() + torch.stack(norms(grads)).float().sum()
        if scaler.found_inf is not None:
            total = total + scaler.found_inf.sum()
        stats = ctx.batchnorm.total() if nonfinite != "unchecked" else None
        stats_ok = 2.0 if stats is None else 2.0 * torch.isfinite(stats.to(total)).float()
        flags = (torch.isfinite(total).float() + stats_ok).reshape(1)
    if ctx.reached_reduced is None:
        code = 3 if flags is None else int(flags.item())
        return bool(code & 1), ctx.reached, bool(code & 2)
    head = [] if flags is None else [flags.to(ctx.reached_reduced)]
    fetched = torch.cat([*head, ctx.reached_reduced]).tolist()
    code = int(fetched[0]) if head else 3
    return bool(code & 1), [flag > 0 for flag in fetched[len(head) :]], bool(code & 2)


def skip_step(ctx: StepContext, grads: list[Tensor], nonfinite: str, step: int,
              losses: Tensor) -> None:  # fmt: skip
    """A non-finite step: the gradients are dropped; ``"raise"`` raises (θ is intact) naming the
    first parameter whose combined gradient is non-finite, else the caller counts the skip."""
    for p in ctx.params:
        p.grad = None
    if nonfinite == "raise" and not ctx.scaler.active:
        raise FloatingPointError(
            f"non-finite loss or gradient at step {step} (perturbed losses {losses.tolist()}"
            f"{_first_nonfinite_gradient(ctx, grads)}); parameters were left unchanged. Pass "
            "nonfinite='skip' to skip such steps instead."
        )


def _first_nonfinite_gradient(ctx: StepContext, grads: list[Tensor]) -> str:
    """Where the combined gradient first is non-finite (the raise path only: a host read per
    parameter); a NaN at θ also makes every perturbed point, so every loss after it, NaN."""
    index = 0
    for group_index, (_group, params) in enumerate(ctx.groups):
        for p in params:
            if not bool(torch.isfinite(grads[index]).all()):
                return (f"; the combined gradient is first non-finite at parameter {index} of "
                        f"the step (param group {group_index}, shape {tuple(p.shape)})")  # fmt: skip
            index += 1
    return "; the gradient is finite"


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
