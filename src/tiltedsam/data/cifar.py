"""CIFAR-10/100 in ImageFolder layout (``<root>/{train,test}/<class>/<image>``), or the same
layout inside a ``.tar.gz`` (e.g. the shipped ``cifar10-jpeg.tar.gz``), read without torchvision.

Class indices follow the sorted class-folder names (ImageFolder's order; for CIFAR-10 this is the
standard order airplane, automobile, ..., truck).  Images within a class are read in sorted file
order, so the data set is the same on every machine.  Decoded arrays are cached as ``.npz`` in
``cache_dir`` (default ``~/.cache/tiltedsam``), keyed by the source's content (an archive's
SHA-256; a folder's file names, sizes and times).  A damaged source fails with one error naming
it (the gzip CRC is read to the end of the stream; every image must decode); a damaged cache
file is rebuilt from the source with a warning.

Training-time augmentation (:func:`random_crop_flip`) is the standard random crop with padding 4
(padding with black pixels) and horizontal flip, done on batches of tensors in torch.
Label noise (:func:`apply_label_noise`) flips an exact fraction of training labels to a uniformly
drawn *other* class, deterministically from a seed; the clean labels are kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tiltedsam._files import save_npz
from tiltedsam.data.integrity import read_npz, sha256_of, verify_gzip_stream
from tiltedsam.data.mnist1d import ArrayDataset

CIFAR_MEAN = {10: (0.4914, 0.4822, 0.4465), 100: (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {10: (0.2470, 0.2435, 0.2616), 100: (0.2673, 0.2564, 0.2762)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _entries(path: Path):
    """Yield (split, class name, file name, bytes) for every image under ``path``."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                rel = file.relative_to(path).parts
                yield rel[-3], rel[-2], rel[-1], file.read_bytes()
        return
    if path.name.endswith((".gz", ".tgz")):
        verify_gzip_stream(path)  # tarfile stops before the CRC: a flipped bit would pass
    # Read the archive in stream order (a compressed tar cannot seek cheaply), then sort.
    found = []
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if not (member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES)):
                    continue
                parts = Path(member.name).parts
                if len(parts) < 3:
                    raise ValueError(
                        f"{path}: {member.name} is not in <split>/<class>/<file> layout"
                    )
                data = archive.extractfile(member).read()
                found.append((parts[-3], parts[-2], parts[-1], data))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{path}: damaged or not a tar archive ({type(err).__name__}: {err})"
        ) from None
    yield from sorted(found, key=lambda entry: entry[:3])


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[str]] = {"train": [], "test": []}
    for split, cls, name, data in _entries(path):
        if split not in images:
            continue
        try:
            images[split].append(_decode(data))
        except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for a damaged image
            raise ValueError(
                f"{path}: {split}/{cls}/{name} is not a readable image ({err})"
            ) from None
        labels[split].append(cls)
    if not images["train"] or not images["test"]:
        raise ValueError(f"{path}: expected images under train/<class>/ and test/<class>/")
    classes = sorted(set(labels["train"]))
    unknown = set(labels["test"]) - set(classes)
    if unknown:
        raise ValueError(f"{path}: test classes {sorted(unknown)} do not appear in train")
    index = {c: i for i, c in enumerate(classes)}
    out = {"classes": np.array(classes)}
    for split in ("train", "test"):
        shapes = {a.shape for a in images[split]}
        if len(shapes) != 1:
            raise ValueError(f"{path}: {split} images have different sizes {sorted(shapes)[:3]}")
        out[f"x_{split}"] = np.stack(images[split]).transpose(0, 3, 1, 2)  # N, C, H, W
        out[f"y_{split}"] = np.array([index[c] for c in labels[split]], dtype=np.int64)
    return out


def _cache_file(path: Path, cache_dir: Path) -> Path:
    """The cache of ``path``, named by its content: an archive's SHA-256, or a folder's image
    file names, sizes and modification times."""
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                stat = file.stat()
                digest.update(
                    f"{file.relative_to(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
                )
        key = digest.hexdigest()
    else:
        key = sha256_of(path)
    return cache_dir / f"{path.name.split('.')[0]}-{key[:16]}.npz"


CACHE_ARRAYS = ("classes", "x_train", "y_train", "x_test", "y_test")


def _read_cache(cache: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None (with a warning, the file removed) if the cache is damaged."""
    try:
        arrays = read_npz(cache, CACHE_ARRAYS, "a CIFAR cache")
        for split in ("train", "test"):
            if arrays[f"x_{split}"].ndim != 4 or len(arrays[f"x_{split}"]) != len(
                arrays[f"y_{split}"]
            ):
                raise ValueError(f"{cache}: x_{split}/y_{split} have inconsistent shapes")
    except ValueError as err:
        warnings.warn(f"{err}; rebuilding the cache from the source", stacklevel=3)
        cache.unlink(missing_ok=True)
        return None
    return arrays


def apply_label_noise(labels: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """Flip exactly ``round(fraction * N)`` labels, each to a uniformly drawn other class.

    The flips use their own random stream (``seed`` mixed with a constant): a plain
    ``manual_seed(seed)`` would draw the same permutation as the validation split
    (``split_validation``, same seed and N) and put every flipped label in the validation set.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {fraction}")
    gen = torch.Generator().manual_seed((seed * 6364136223846793005 + 1442695040888963407) % 2**63)
    count = round(fraction * len(labels))
    chosen = torch.randperm(len(labels), generator=gen)[:count]
    shift = torch.randint(1, num_classes, (count,), generator=gen)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + shift) % num_classes
    return noisy


def load_cifar(
    path: str | Path,
    *,
    num_classes: int = 10,
    label_noise: float = 0.0,
    noise_seed: int = 0,
    cache_dir: str | Path | None = None,
) -> ArrayDataset:
    """CIFAR from an ImageFolder directory or archive; normalised float32 (N, 3, 32, 32)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CIFAR data not found at {path} (an ImageFolder dir or .tar.gz)")
    cache_dir = Path(
        cache_dir or os.environ.get("TILTEDSAM_CACHE", Path.home() / ".cache/tiltedsam")
    )
    cache = _cache_file(path, cache_dir)
    arrays = _read_cache(cache) if cache.exists() else None
    if arrays is None:
        arrays = _read_arrays(path)
        save_npz(cache, arrays)
    found = len(arrays["classes"])
    if found != num_classes:
        raise ValueError(f"{path}: found {found} classes, expected num_classes={num_classes}")
    mean = torch.tensor(CIFAR_MEAN.get(num_classes, CIFAR_MEAN[10])).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD.get(num_classes, CIFAR_STD[10])).view(1, 3, 1, 1)

    def normalise(x: np.ndarray) -> Tensor:
        return (torch.from_numpy(x).float() / 255.0 - mean) / std

    y_train = torch.from_numpy(arrays["y_train"])
    noisy = (
        apply_label_noise(y_train, label_noise, num_classes, noise_seed) if label_noise else y_train
    )
    return ArrayDataset(
        x_train=normalise(arrays["x_train"]),
        y_train=noisy,
        x_test=normalise(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"]),
        num_classes=num_classes,
        name=f"cifar{num_classes}",
        y_train_clean=y_train,
        augment="crop_flip",
        pad_value=tuple((-mean / std).view(-1).tolist()),
    )


def random_crop_flip(x: Tensor, generator: torch.Generator, pad_value, padding: int = 4) -> Tensor:
    """Random crop of the original size from the image padded by ``padding``, then flip w.p. 1/2."""
    n, c, h, w = x.shape
    fill = torch.tensor(pad_value, dtype=x.dtype).view(1, c, 1, 1)
    padded = fill.expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = x
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        top, left = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, top : top + h, left : left + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out
