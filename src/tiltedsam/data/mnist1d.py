"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package.

``mnist1d.data.make_dataset`` builds the benchmark procedurally from 10 templates (default:
5000 samples, 4000 train / 1000 test, length 40, generation seed 42), so no download is needed.
It reseeds NumPy's global RNG; this loader restores that state afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tiltedsam._files import save_npz


@dataclass(frozen=True)
class ArrayDataset:
    """Tensors of one data set: ``x`` as (N, C, ...) float32, ``y`` as (N,) int64; an optional
    validation split carved from the training set (:func:`split_validation`)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    name: str
    x_val: Tensor | None = None
    y_val: Tensor | None = None
    y_train_clean: Tensor | None = None  # labels before label noise, when noise was applied
    augment: str | None = None  # "crop_flip" for CIFAR-style training augmentation
    pad_value: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        from tiltedsam.data.integrity import check_labels

        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) == 0:
                raise ValueError(f"{self.name}: the {split} split is empty")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: x_{split} has {len(x)} rows but y_{split} {len(y)}")
        for split in ("train", "test", "val", "train_clean"):
            labels = getattr(self, f"y_{split}")
            if labels is not None:
                check_labels(f"{self.name}: y_{split}", labels, self.num_classes)
        # Non-finite inputs are allowed: a NaN example is a fault the optimizers handle
        # (nonfinite="skip_sample"), tested as such in tests/reliability.


def load_mnist1d(
    path: str | Path | None = None, *, num_samples: int = 5000, seed: int = 42
) -> ArrayDataset:
    """MNIST-1D as tensors.  With ``path``, a cached ``.npz`` there is read, or written once made."""
    path = Path(path) if path is not None else None
    if path is not None and path.exists():
        from tiltedsam.data.integrity import read_npz

        raw = read_npz(path, ("x", "y", "x_test", "y_test"), "an MNIST-1D cache")
    else:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = num_samples
        args.seed = seed
        state = np.random.get_state()  # noqa: NPY002 (mnist1d reseeds the global RNG)
        try:
            raw = make_dataset(args)
        finally:
            np.random.set_state(state)  # noqa: NPY002
        if path is not None:
            save_npz(path, {k: raw[k] for k in ("x", "y", "x_test", "y_test")})

    def features(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float32)).unsqueeze(1)

    def labels(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    if path is not None and (raw["x"].ndim != 2 or raw["x_test"].ndim != 2):
        raise ValueError(
            f"{path}: not an MNIST-1D cache: x has shape {raw['x'].shape}, expected (N, length)"
        )
    try:
        return ArrayDataset(
            x_train=features(raw["x"]),
            y_train=labels(raw["y"]),
            x_test=features(raw["x_test"]),
            y_test=labels(raw["y_test"]),
            num_classes=10,
            name="mnist1d",
        )
    except ValueError as err:  # bad labels or values in a cache file: name the file
        if path is None:
            raise
        raise ValueError(f"{path}: {err}") from None


def split_validation(data: ArrayDataset, size: int | float, seed: int = 0) -> ArrayDataset:
    """Carve a validation split of ``size`` examples (or that fraction) from the training set.

    Validation labels are the training labels as observed (with label noise, if any): model
    selection sees only what a user would have.
    """
    n = len(data.x_train)
    count = round(size * n) if isinstance(size, float) else int(size)
    if not 0 < count < n:
        raise ValueError(f"validation size must leave both splits non-empty, got {size} of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:count].sort().values, perm[count:].sort().values
    clean = data.y_train_clean
    return dataclasses.replace(
        data,
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_val=data.x_train[val],
        y_val=data.y_train[val],  # as observed (noisy, if label noise was applied)
        y_train_clean=None if clean is None else clean[train],
    )
