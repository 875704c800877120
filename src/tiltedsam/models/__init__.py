"""Models for the experiments, by name: ``create_model(name, input_shape, num_classes)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from tiltedsam.models.mnist1d import CNN1D, CNN2D, MLP
from tiltedsam.models.resnet import resnet8, resnet18, wrn16_8

MODELS: dict[str, Callable[[Sequence[int], int], nn.Module]] = {
    "cnn1d": lambda shape, k: CNN1D(in_channels=shape[0], length=shape[-1], num_classes=k),
    "cnn2d": lambda shape, k: CNN2D(in_channels=shape[0], size=shape[-1], num_classes=k),
    # 16 channels (~20k parameters): cheap enough for CPU studies, still fits small data sets.
    "cnn2d_small": lambda shape, k: CNN2D(
        in_channels=shape[0], size=shape[-1], num_classes=k, channels=16
    ),
    "mlp": lambda shape, k: MLP(in_channels=shape[0], length=_numel(shape[1:]), num_classes=k),
    # Text (issue #20): the top k layers of all-MiniLM-L6-v2 on the features of the 6 - k frozen
    # ones (tiltedsam.data.text_features); needs the text extra.
    "minilm_top1": lambda shape, k: _text_top(1, k),
    "minilm_top2": lambda shape, k: _text_top(2, k),
    "minilm_top3": lambda shape, k: _text_top(3, k),
    "resnet8": lambda shape, k: resnet8(shape[0], k),
    "resnet18": lambda shape, k: resnet18(shape[0], k),
    "wrn16_8": lambda shape, k: wrn16_8(shape[0], k),
}


def _text_top(trainable_layers: int, num_classes: int) -> nn.Module:
    from tiltedsam.models.text import TopLayersOnFeatures

    return TopLayersOnFeatures(trainable_layers, num_classes)


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def create_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A model by name for inputs of shape ``input_shape`` (without the batch dim)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](tuple(input_shape), num_classes)


__all__ = ["CNN1D", "CNN2D", "MLP", "MODELS", "create_model"]
