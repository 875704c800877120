"""Normalisation layers that keep running statistics (BatchNorm, InstanceNorm), by their public
classes: the optimizers keep their statistics to one update per step, the analysis puts them
alone in train mode."""

from __future__ import annotations

from torch import nn

BATCH_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d,
)  # fmt: skip
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    *BATCH_NORM_LAYERS,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d,
)  # fmt: skip


def norm_layers(model: nn.Module | None, tracking_only: bool = True) -> list[nn.Module]:
    """The normalisation layers of ``model`` (those that track running statistics, by default)."""
    if model is None:
        return []
    return [
        m
        for m in model.modules()
        if isinstance(m, NORM_LAYERS) and (m.track_running_stats or not tracking_only)
    ]
