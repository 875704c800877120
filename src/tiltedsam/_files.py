"""The one atomic file writer: every file the package writes goes through :func:`write_atomic`.

The bytes go to ``.<name>.<pid>.tmp`` next to ``path``, are flushed and fsynced, and the file is
renamed into place (optionally after moving the current one to ``previous``), so a reader, a
second process or a crash never sees a half-written file; on an error (a full disk) the
temporary file is removed and what was there stays as it was.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(
    path: str | Path, data: str | bytes | list[bytes | memoryview], *, previous: Path | None = None
) -> None:
    """Write ``data`` (text, bytes, or byte chunks written one after another) to ``path``
    through a temporary file and a rename; with ``previous``, the file ``path`` held is moved
    there first (so at every instant one complete file exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = (
        [data.encode()] if isinstance(data, str) else [data] if isinstance(data, bytes) else data
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json(path: str | Path, payload: Any) -> None:
    """``payload`` as indented JSON with sorted keys (anything else as ``str``)."""
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def save_torch(path: str | Path, payload: Any) -> None:
    """``torch.save(payload)`` written atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def save_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """NumPy arrays as an ``.npz`` file (``np.savez``), written atomically."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def save_figure(fig: Any, path: str | Path) -> None:
    """A matplotlib figure as PNG, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())


__all__ = ["save_figure", "save_npz", "save_torch", "write_atomic", "write_json"]
