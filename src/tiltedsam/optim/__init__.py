"""Optimizers and the registry ``create_optimizer(name, params, base=..., **kw)``.

| name | class | passes per step |
|---|---|---|
| ``erm`` | the base optimizer itself | 1 |
| ``sam`` / ``asam`` | :class:`SAM` (``adaptive=True`` for ASAM) | 2 |
| ``esam1`` | :class:`SAM`; the harness gives it TSAM's pass budget (``budget`` × epochs) | 2 |
| ``esam2`` | :class:`ESAM2` | 1 + len(rhos) |
| ``pgn`` | :class:`PGN` | 2 |
| ``rsam`` | :class:`RSAM` | 2 |
| ``tracesam`` / ``frobsam`` / ``detsam`` | :class:`TraceSAM` / :class:`FrobSAM` / :class:`DetSAM` | 1 + n |
| ``tsam`` | :class:`TSAM` (ascent sampler) | 2s |
| ``tsam-naive`` | :class:`TSAM` with ``sampler="uniform"`` (paper Fig. 8) | s |
| ``tsam-resample`` | :class:`TSAMResample`: s forward-only scores, one resampled backward | s + 2 (s forward only) |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from tiltedsam.optim.base import PerturbationOptimizer
from tiltedsam.optim.esam import ESAM2
from tiltedsam.optim.pgn import PGN
from tiltedsam.optim.rsam import RSAM
from tiltedsam.optim.sam import SAM
from tiltedsam.optim.tsam import TSAM, StepDiagnostics
from tiltedsam.optim.tsam_resample import TSAMResample
from tiltedsam.optim.universal import DetSAM, FrobSAM, TraceSAM

BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

_Factory = Callable[..., torch.optim.Optimizer]

REGISTRY: dict[str, _Factory] = {
    "erm": lambda params, base, **kw: _erm(params, base, **kw),
    "sam": lambda params, base, **kw: SAM(params, base, **kw),
    "asam": lambda params, base, **kw: SAM(params, base, adaptive=True, **kw),
    "esam1": lambda params, base, **kw: SAM(params, base, **kw),
    "esam2": lambda params, base, **kw: ESAM2(params, base, **kw),
    "pgn": lambda params, base, **kw: PGN(params, base, **kw),
    "rsam": lambda params, base, **kw: RSAM(params, base, **kw),
    "tracesam": lambda params, base, **kw: TraceSAM(params, base, **kw),
    "frobsam": lambda params, base, **kw: FrobSAM(params, base, **kw),
    "detsam": lambda params, base, **kw: DetSAM(params, base, **kw),
    "tsam": lambda params, base, **kw: TSAM(params, base, **kw),
    "tsam-naive": lambda params, base, **kw: TSAM(params, base, **{"sampler": "uniform", **kw}),
    "tsam-resample": lambda params, base, **kw: TSAMResample(params, base, **kw),
}

OPTIMIZERS = tuple(REGISTRY)


def _erm(params, base, **kw):
    shared = sorted(
        {"grad_scaler", "max_grad_norm", "distributed", "process_group", "model"} & set(kw)
    )
    if shared:
        raise TypeError(
            f"erm is the bare base optimizer and does not take {shared}: use "
            "scaler.step(opt) / clip_grad_norm_ / DistributedDataParallel with it as usual"
        )
    return base(params, **kw)


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
    """Build an optimizer by registry name (see the module table) around ``base``.

    ``kwargs`` hold the method's options and the base optimizer's (lr, momentum, ...).
    Every returned optimizer accepts ``step(closure)``; for ``erm`` the caller zeroes gradients.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in REGISTRY:
        raise ValueError(f"optimizer name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return REGISTRY[key](params, _base_class(base), **kwargs)


__all__ = [
    "BASE_OPTIMIZERS",
    "ESAM2",
    "OPTIMIZERS",
    "PGN",
    "REGISTRY",
    "RSAM",
    "SAM",
    "TSAM",
    "DetSAM",
    "FrobSAM",
    "PerturbationOptimizer",
    "StepDiagnostics",
    "TSAMResample",
    "TraceSAM",
    "create_optimizer",
]
