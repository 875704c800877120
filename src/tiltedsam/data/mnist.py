"""MNIST from an ``.npz`` with arrays ``x_train`` (N, 28, 28) uint8, ``y_train``, ``x_test``, ``y_test``
(the layout of the shipped ``mnist.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tiltedsam.data.integrity import read_npz
from tiltedsam.data.mnist1d import ArrayDataset

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def load_mnist(path: str | Path) -> ArrayDataset:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"MNIST file not found: {path} (an .npz with x_train, y_train, ...)"
        )
    raw = read_npz(path, ("x_train", "y_train", "x_test", "y_test"), "an MNIST .npz")
    for split in ("train", "test"):
        if raw[f"x_{split}"].ndim != 3:
            raise ValueError(
                f"{path}: x_{split} has shape {raw[f'x_{split}'].shape}, expected (N, 28, 28) images"
            )

    def images(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(a, dtype=np.float32) / 255.0)
        return ((x - MNIST_MEAN) / MNIST_STD).unsqueeze(1)

    try:
        return ArrayDataset(
            x_train=images(raw["x_train"]),
            y_train=torch.from_numpy(raw["y_train"].astype(np.int64)),
            x_test=images(raw["x_test"]),
            y_test=torch.from_numpy(raw["y_test"].astype(np.int64)),
            num_classes=10,
            name="mnist",
        )
    except ValueError as err:  # empty or mismatched arrays: say which file
        raise ValueError(f"{path}: {err}") from None
