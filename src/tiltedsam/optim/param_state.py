"""Per-parameter tensors an optimizer keeps from one step to the next (``tsam-stale``'s ascent
direction, ``tsam-intermittent``'s correction), keyed by the parameter and not by its position
among the trainable ones: a layer frozen or unfrozen between steps leaves the others' entries
where they belong, and a parameter with no entry reads as zeros.

Stored in the ``state_dict`` as ``{index: tensor}`` with ``index`` the parameter's position in
the flat list of every group's parameters (the numbering ``torch.optim`` uses for its state), and
cast to each parameter's device and dtype when read, so a checkpoint saved on one device or in
one precision resumes on another.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def parameter_index(param_groups: list[dict[str, Any]]) -> dict[int, int]:
    """``id(p)`` → ``p``'s position among all the groups' parameters."""
    return {id(p): i for i, p in enumerate(p for g in param_groups for p in g["params"])}


class ParamState:
    """A tensor per parameter, kept across steps (see the module doc)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[int, Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.values)

    def get(self, param_groups: list[dict[str, Any]], params: list[Tensor]) -> list[Tensor]:
        """The stored tensor of each of ``params`` on its device and dtype (zeros where none)."""
        index = parameter_index(param_groups)
        out = []
        for p in params:
            value = self.values.get(index[id(p)])
            if value is None:
                out.append(torch.zeros_like(p))
                continue
            if value.shape != p.shape:
                raise ValueError(
                    f"{self.name} of parameter {index[id(p)]} has shape {tuple(value.shape)}, "
                    f"the parameter {tuple(p.shape)}: the state belongs to another model"
                )
            out.append(value.to(device=p.device, dtype=p.dtype))
        return out

    def set(self, param_groups: list[dict[str, Any]], params: list[Tensor],
            tensors: list[Tensor]) -> None:  # fmt: skip
        """Keep ``tensors`` (copied) as the entries of ``params``; other entries stay."""
        index = parameter_index(param_groups)
        for p, t in zip(params, tensors, strict=True):
            stored = self.values.get(index[id(p)])
            if stored is not None and stored.shape == t.shape and stored.dtype == t.dtype \
                    and stored.device == t.device:  # fmt: skip
                stored.copy_(t)
            else:
                self.values[index[id(p)]] = t.detach().clone()

    def state(self) -> dict[int, Tensor] | None:
        return dict(self.values) if self.values else None

    def load(self, stored: Any, param_groups: list[dict[str, Any]]) -> None:
        """From :meth:`state`'s dict, or the list (aligned with the trainable parameters) that
        checkpoints of tiltedsam 0.x before this module stored."""
        self.values = {}
        if stored is None:
            return
        if isinstance(stored, list | tuple):
            trainable = [i for i, p in enumerate(p for g in param_groups for p in g["params"])
                         if p.requires_grad]  # fmt: skip
            if len(stored) != len(trainable):
                raise ValueError(
                    f"{self.name} holds {len(stored)} tensors, the optimizer "
                    f"{len(trainable)} trainable parameters: the state belongs to another model"
                )
            stored = dict(zip(trainable, stored, strict=True))
        if not isinstance(stored, dict):
            raise TypeError(f"{self.name} must be a dict of tensors, got {type(stored).__name__}")
        flat = [p for g in param_groups for p in g["params"]]
        for key, value in stored.items():
            if (
                not isinstance(key, int)
                or not 0 <= key < len(flat)
                or not isinstance(value, Tensor)
            ):
                raise ValueError(
                    f"{self.name}: entry {key!r} is not a parameter index with a tensor"
                )
            p = flat[key]
            if value.shape != p.shape:
                raise ValueError(
                    f"{self.name} of parameter {key} has shape {tuple(value.shape)}, the "
                    f"parameter {tuple(p.shape)}: the state belongs to another model"
                )
            self.values[key] = value.detach().to(device=p.device, dtype=p.dtype, copy=True)


__all__ = ["ParamState", "parameter_index"]
