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


def global_norm(tensors: list[Tensor]) -> Tensor:
    r""":math:`\sqrt{\sum_i \|x_i\|_2^2}` over a list of tensors, as a 0-dim tensor (no host sync).

    Accumulated in float64 when any input is float64, else float32.
    """
    if not tensors:
        return torch.zeros(())
    norms = torch._foreach_norm(tensors)
    device = norms[0].device
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    if any(n.dtype != dtype or n.device != device for n in norms):
        norms = [n.to(device, dtype) for n in norms]
    return torch.linalg.vector_norm(torch.stack(norms))
