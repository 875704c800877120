"""Small tensor-list helpers shared by the optimizers and samplers."""

from __future__ import annotations

import torch
from torch import Tensor


def global_norm(tensors: list[Tensor]) -> Tensor:
    r""":math:`\sqrt{\sum_i \|x_i\|_2^2}` over a list of tensors, as a 0-dim tensor (no host sync).

    Accumulated in float64 when any input is float64, else float32.
    """
    if not tensors:
        return torch.zeros(())
    norms = torch._foreach_norm(tensors)
    device = norms[0].device
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]))
