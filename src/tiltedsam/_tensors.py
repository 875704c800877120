"""Small tensor-list helpers shared by the optimizers and samplers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable)


def no_grad(fn: F) -> F:
    """Like ``@torch.no_grad()``, but free when gradients are already disabled.

    The optimizers call these helpers from inside their own ``no_grad`` step; ``torch.no_grad``
    as a decorator builds and enters a context manager on every call (a few microseconds, which
    adds up in a step of small models)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def norms(tensors: list[Tensor]) -> list[Tensor]:
    """The L2 norm of each tensor, computed in float64 when any input is float64, else in
    float32 (so float16/bfloat16 gradients above 65504 in norm do not overflow)."""
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return list(torch._foreach_norm(tensors, 2, dtype=dtype))


def global_norm(tensors: list[Tensor]) -> Tensor:
    r""":math:`\sqrt{\sum_i \|x_i\|_2^2}` over a list of tensors, as a 0-dim tensor (no host sync).

    Accumulated in float64 when any input is float64, else float32 (half precision included).
    """
    if not tensors:
        return torch.zeros(())
    parts = norms(tensors)
    device = parts[0].device
    if any(n.device != device for n in parts):
        parts = [n.to(device) for n in parts]
    return torch.linalg.vector_norm(torch.stack(parts))
