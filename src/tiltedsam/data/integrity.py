"""Checks on the files the data loaders read: a damaged or wrong file is one clear error.

Every problem is a ``ValueError`` whose message starts with the file's path and says what is
wrong (the CLI prints it as one line and exits with status 2).  The checksums the formats carry
are verified (the gzip stream's CRC-32, read to its end; each ``.npz`` member's CRC-32; GLUE's
``MD5SUMS`` where the folder has one), then what the arrays must be: names, shapes, dtypes,
and labels within the classes.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# What a damaged archive or .npz raises while being read.
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_gzip_stream(path: Path) -> None:
    """Read a gzip file to its end, so its CRC-32 and length trailer are checked (``tarfile``
    stops at the tar end marker and never reaches them)."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: damaged gzip data ({' '.join(str(err).split())})") from None


def read_npz(path: Path, names: Iterable[str], what: str) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` (no pickles); errors name the file and the problem."""
    names = list(names)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if not isinstance(arrays, np.lib.npyio.NpzFile):
                raise ValueError(
                    f"{path}: expected an .npz archive of arrays ({what}), found one array"
                )
            missing = sorted(n for n in names if n not in arrays.files)
            if missing:
                raise ValueError(
                    f"{path}: not {what}: missing arrays {missing} (it holds {sorted(arrays.files)})"
                )
            return {n: arrays[n] for n in names}
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    except READ_ERRORS as err:
        raise ValueError(f"{path}: damaged .npz file ({type(err).__name__}: {err})") from None


def check_labels(name: str, labels: Tensor, num_classes: int) -> None:
    """Integer class labels in [0, num_classes)."""
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{name} must hold integer class labels, got dtype {labels.dtype}")
    if labels.numel() == 0:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} holds labels outside [0, {num_classes - 1}] (e.g. {int(labels[row])} at row "
            f"{row}): not labels of this data set's {num_classes} classes"
        )
