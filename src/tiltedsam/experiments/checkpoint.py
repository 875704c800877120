"""Checkpoint files that survive crashes: atomic, checksummed, with the previous one kept.

A checkpoint file is a one-line header, ``TILTEDSAM-CHECKPOINT v1 sha256=<64 hex digits>``, then
the bytes of ``torch.save(payload)``; the digest covers those bytes, so a truncated or corrupted
file is detected before anything is unpickled.  Files without the header (written before it
existed) are read with ``torch.load`` alone.

:func:`save_checkpoint` writes ``.<name>.<pid>.tmp``, fsyncs it, moves the current checkpoint to
``<stem>.prev<suffix>`` (``checkpoint.prev.pt``) and renames the temporary file into place, so
at every instant at least one complete checkpoint exists.  :func:`load_latest` returns the newest
good one: a damaged ``checkpoint.pt`` is skipped with a :class:`CheckpointWarning` naming the
file and the reason, and the previous one is used; when files exist but none is usable it raises
:class:`CheckpointError` (it never returns "nothing" over existing, damaged state).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tiltedsam._files import write_atomic

MAGIC = b"TILTEDSAM-CHECKPOINT v1 sha256="
_DIGEST_LEN = 64


class CheckpointError(RuntimeError):
    """A checkpoint that should be resumed from cannot be: damaged, or from another setting."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older one."""


def previous_path(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` → ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checkpoint_files(path: Path) -> list[Path]:
    """``path``, its previous copy and any temporary files left by an interrupted write."""
    path = Path(path)
    return [path, previous_path(path), *path.parent.glob(f".{path.name}.*.tmp")]


def remove_checkpoints(path: Path) -> None:
    """Delete ``path``, its previous copy and leftover temporary files."""
    for file in checkpoint_files(path):
        file.unlink(missing_ok=True)


def save_checkpoint(payload: Any, path: Path) -> None:
    """Write ``payload`` to ``path`` atomically with a checksum; keep the old file as ``.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getbuffer()
    digest = hashlib.sha256(data).hexdigest().encode("ascii")
    write_atomic(path, [MAGIC + digest + b"\n", data], previous=previous_path(path))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint file; :class:`CheckpointError` says what is wrong with it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err})") from None
    if raw.startswith(MAGIC):
        end = len(MAGIC) + _DIGEST_LEN
        digest = raw[len(MAGIC) : end].decode("ascii", errors="replace")
        if raw[end : end + 1] != b"\n":
            raise CheckpointError(f"{path}: truncated header (the file is damaged)")
        data = memoryview(raw)[end + 1 :]
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(
                f"{path}: checksum mismatch ({len(data)} bytes after the header): the file is "
                "truncated or corrupted"
            )
        source = io.BytesIO(data)
    elif not raw:
        raise CheckpointError(f"{path}: the file is empty")
    else:
        source = io.BytesIO(raw)  # written before checksums: torch.load is the only check
    try:
        # weights_only: tensors and plain Python types only, never arbitrary objects, so a
        # crafted file cannot run code when a results directory is read (issue #17).
        payload = torch.load(source, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: not a checkpoint of tensors and plain Python values (refused: loading "
            "other objects could run code)"
        ) from None
    except Exception as err:  # any other unpickling error means the same thing: unusable
        reason = " ".join(str(err).split())[:160]
        raise CheckpointError(
            f"{path}: cannot be loaded ({type(err).__name__}: {reason})"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(payload).__name__}")
    return payload


def load_latest(
    path: Path, validate: Callable[[dict[str, Any], Path], None] | None = None
) -> tuple[dict[str, Any], Path] | None:
    """The newest usable checkpoint of ``path`` (``path``, then its ``.prev`` copy) and its file.

    ``validate(payload, file)`` may raise :class:`CheckpointError` to reject a payload (e.g. one
    missing keys).  Each rejected file is reported in one :class:`CheckpointWarning`.  Returns
    None when neither file exists; raises :class:`CheckpointError` when files exist but none is
    usable, so a caller never starts from scratch over damaged state without being told.
    """
    path = Path(path)
    problems: list[str] = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            if candidate == path and previous_path(path).exists():
                problems.append(f"{path}: missing (the run stopped while replacing it)")
            continue
        try:
            payload = read_checkpoint(candidate)
            if validate is not None:
                validate(payload, candidate)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            warnings.warn(
                f"skipped unusable checkpoint: {'; '.join(problems)}. Resuming from {candidate} "
                f"(epoch {payload.get('epoch', '?')}) instead; the epochs after it are trained "
                "again",
                CheckpointWarning,
                stacklevel=2,
            )
        return payload, candidate
    if problems:
        raise CheckpointError(
            "no usable checkpoint: "
            + "; ".join(problems)
            + f". Restore a good copy, or delete {path} and {previous_path(path)} to train this "
            "run from scratch (its finished epochs are lost)"
        )
    return None


__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "checkpoint_files",
    "load_latest",
    "previous_path",
    "read_checkpoint",
    "remove_checkpoints",
    "save_checkpoint",
]
