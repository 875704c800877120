"""Data loaders.  Nothing is downloaded at run time; each loader takes a path.

``load_dataset(name, path)`` picks one by name; without a path, the shared data folder
``../shared/data/`` (relative to the working directory) is used when it holds the data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tiltedsam.data.cifar import apply_label_noise, load_cifar, random_crop_flip
from tiltedsam.data.mnist import load_mnist
from tiltedsam.data.mnist1d import ArrayDataset, load_mnist1d, split_validation

SHARED = Path("../shared/data")
DEFAULT_PATHS = {"mnist": SHARED / "mnist.npz", "cifar10": SHARED / "cifar10-jpeg.tar.gz"}
DATASETS = ("mnist1d", "mnist", "cifar10", "cifar100")


def load_dataset(
    name: str,
    path: str | Path | None = None,
    *,
    label_noise: float = 0.0,
    val_size: int | float = 0,
    train_subset: int | None = None,
    seed: int = 0,
) -> ArrayDataset:
    """A data set by name, with optional label noise, a training subset and a validation split."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    if name == "mnist1d":
        data = load_mnist1d(path)
    else:
        path = Path(path) if path is not None else DEFAULT_PATHS.get(name)
        if path is None:
            raise ValueError(f"dataset {name!r} needs --data-path (an ImageFolder dir or archive)")
        if name == "mnist":
            data = load_mnist(path)
        else:
            data = load_cifar(path, num_classes=10 if name == "cifar10" else 100)
    if train_subset is not None:
        if not 0 < train_subset <= len(data.x_train):
            raise ValueError(
                f"train_subset must be in [1, {len(data.x_train)}], got {train_subset}"
            )
        keep = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
        keep = keep[:train_subset].sort().values
        clean = data.y_train_clean  # kept aligned: the clean-label training accuracy reads it
        data = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep],
                                   y_train_clean=None if clean is None else clean[keep])  # fmt: skip
    if label_noise:
        noisy = apply_label_noise(data.y_train, label_noise, data.num_classes, seed)
        data = dataclasses.replace(data, y_train=noisy, y_train_clean=data.y_train)
    if val_size:
        data = split_validation(data, val_size, seed)
    return data


__all__ = [
    "DATASETS",
    "ArrayDataset",
    "apply_label_noise",
    "load_cifar",
    "load_dataset",
    "load_mnist",
    "load_mnist1d",
    "random_crop_flip",
    "split_validation",
]
