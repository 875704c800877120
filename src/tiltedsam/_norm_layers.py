"""Normalisation layers that keep running statistics (BatchNorm, SyncBatchNorm, InstanceNorm, and
third-party classes built like them, e.g. apex's SyncBatchNorm), found by their public
attributes: a bool ``track_running_stats`` and a ``running_mean``.  The optimizers keep their
statistics to one update per step; the analysis puts them alone in train mode."""

from __future__ import annotations

from torch import nn

# torch's own BatchNorm layers (what the official TSAM code's `_BatchNorm` test covers), for the
# reference implementation that mirrors it.
BATCH_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d,
)  # fmt: skip


def is_norm_layer(module: nn.Module) -> bool:
    """A layer with running statistics it may track (whether or not it does)."""
    return isinstance(getattr(module, "track_running_stats", None), bool) and hasattr(
        module, "running_mean"
    )


def norm_layers(model: nn.Module | None, tracking_only: bool = True) -> list[nn.Module]:
    """The normalisation layers of ``model`` (those that track running statistics, by default)."""
    if model is None:
        return []
    return [
        m
        for m in model.modules()
        if is_norm_layer(m) and (not tracking_only or m.track_running_stats)
    ]
