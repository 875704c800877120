"""MNIST from an ``.npz`` with arrays ``x_train`` (N, 28, 28) uint8, ``y_train``, ``x_test``, ``y_test``
(the layout of the shipped ``mnist.npz``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from tiltedsam.data.mnist1d import ArrayDataset

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def load_mnist(path: str | Path) -> ArrayDataset:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"MNIST file not found: {path} (an .npz with x_train, y_train, ...)"
        )
    try:
        arrays = np.load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of arrays, found a single array")
    with arrays:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}")
        try:
            raw = {k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: damaged array data ({err})") from None

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
