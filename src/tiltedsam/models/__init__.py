"""Models for the experiments."""

from __future__ import annotations

from torch import nn

from tiltedsam.models.mnist1d import CNN1D, MLP

MODELS = {"cnn1d": CNN1D, "mlp": MLP}


def create_model(name: str, *, in_channels: int, length: int, num_classes: int) -> nn.Module:
    """A model by name (``cnn1d``, ``mlp``) sized for inputs of shape (in_channels, length)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](in_channels=in_channels, length=length, num_classes=num_classes)


__all__ = ["CNN1D", "MLP", "MODELS", "create_model"]
