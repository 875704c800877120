"""Optimizers and the registry ``create_optimizer(name, params, base=..., **kw)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from tiltedsam.optim.base import PerturbationOptimizer
from tiltedsam.optim.sam import SAM
from tiltedsam.optim.tsam import TSAM, StepDiagnostics

BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

OPTIMIZERS = ("erm", "sam", "asam", "tsam")


def _base_class(base: str | type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    if isinstance(base, str):
        if base.lower() not in BASE_OPTIMIZERS:
            raise ValueError(
                f"base must be one of {sorted(BASE_OPTIMIZERS)} or an optimizer class, got {base!r}"
            )
        return BASE_OPTIMIZERS[base.lower()]
    return base


def create_optimizer(
    name: str,
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    base: str | type[torch.optim.Optimizer] = "sgd",
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build an optimizer by name: ``erm`` (the plain base optimizer), ``sam``, ``asam``, ``tsam``.

    ``kwargs`` hold the method's options and the base optimizer's (lr, momentum, ...).
    Every returned optimizer accepts ``step(closure)``; for ``erm`` the caller zeroes gradients.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    base_cls = _base_class(base)
    if key == "erm":
        return base_cls(params, **kwargs)
    if key == "sam":
        return SAM(params, base_cls, **kwargs)
    if key == "asam":
        return SAM(params, base_cls, adaptive=True, **kwargs)
    return TSAM(params, base_cls, **kwargs)


__all__ = [
    "BASE_OPTIMIZERS",
    "OPTIMIZERS",
    "SAM",
    "TSAM",
    "PerturbationOptimizer",
    "StepDiagnostics",
    "create_optimizer",
]
