"""Data-parallel training without the ``DistributedDataParallel`` wrapper's gradient hooks.

A perturbation step needs, on every rank, the same losses (the tilted weights are a softmax of
them) and, for the ascent, the gradient of the whole global batch.  DDP all-reduces gradients but
not losses, so with DDP alone the ranks would weight their samples differently and drift apart.
Here the optimizer does the communication itself, one ``all_reduce`` per pass that carries the
gradients, a reached-flag per parameter and the loss in one flat buffer (``"global"`` mode), or
one per step on the combined gradient and losses (``"per_rank"``, m-sharpness: each rank perturbs
with its own batch and noise).

``"auto"`` (the default) is ``"global"`` when ``torch.distributed`` is initialised with more than
one rank, else ``"off"``.
"""

from __future__ import annotations

import torch
from torch import Tensor

DISTRIBUTED_MODES = ("auto", "off", "global", "per_rank")


def resolve_mode(mode: str, process_group=None) -> str:
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {DISTRIBUTED_MODES}, got {mode!r}")
    available = torch.distributed.is_available() and torch.distributed.is_initialized()
    if mode == "auto":
        return "global" if available and world_size(process_group) > 1 else "off"
    if mode != "off" and not available:
        raise RuntimeError(
            f"distributed={mode!r} needs torch.distributed.init_process_group() to be called first"
        )
    return mode


def world_size(process_group=None) -> int:
    return torch.distributed.get_world_size(process_group)


def rank(process_group=None) -> int:
    return torch.distributed.get_rank(process_group)


@torch.no_grad()
def broadcast_params(params: list[Tensor], process_group=None) -> None:
    """Every rank starts from rank 0's parameters (what DDP's constructor does)."""
    src = torch.distributed.get_global_rank(process_group, 0) if process_group else 0
    for p in params:
        torch.distributed.broadcast(p.data, src=src, group=process_group)


def broadcast_seed(seed: int, device: torch.device, process_group=None) -> int:
    """Rank 0's seed, on every rank."""
    src = torch.distributed.get_global_rank(process_group, 0) if process_group else 0
    value = torch.tensor([seed], dtype=torch.int64, device=device)
    torch.distributed.broadcast(value, src=src, group=process_group)
    return int(value.item())


@torch.no_grad()
def check_ranks_agree(settings: dict[str, float], device: torch.device, process_group=None) -> None:
    """Raise on every rank if any setting differs across ranks (two all-reduces, first step)."""
    names = sorted(settings)
    values = torch.tensor([float(settings[n]) for n in names], dtype=torch.float64, device=device)
    low, high = values.clone(), values.clone()
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN, group=process_group)
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX, group=process_group)
    differ = [
        f"{n} (min {lo:g}, max {hi:g})"
        for n, lo, hi in zip(names, low.tolist(), high.tolist(), strict=True)
        if lo != hi
    ]
    if differ:
        raise ValueError(
            "the optimizer's settings differ across ranks: " + ", ".join(differ) + "; every rank "
            "must build the optimizer with the same arguments"
        )


@torch.no_grad()
def average_(grads: list[Tensor], extras: Tensor, process_group=None) -> Tensor:
    """Average ``grads`` (in place) and ``extras`` over ranks in one all-reduce; returns extras."""
    dtype = extras.dtype
    for g in grads:
        dtype = torch.promote_types(dtype, g.dtype)
    flat = torch.cat([g.reshape(-1).to(dtype) for g in grads] + [extras.reshape(-1).to(dtype)])
    torch.distributed.all_reduce(flat, group=process_group)
    flat.div_(world_size(process_group))
    start = 0
    for g in grads:
        g.copy_(flat[start : start + g.numel()].view_as(g))
        start += g.numel()
    return flat[start:].to(extras.dtype)
