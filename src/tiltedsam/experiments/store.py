"""Run directories: ``ROOT/runs/<method label>/seed<k>/{config.json,summary.json}``.

``summary.json`` is written last and atomically (temp file + rename), so a directory holding it
(with its ``model.pt``) is a finished run; a run whose stored config differs from the requested
one is cleared (:func:`clear_run`) and run again.  Every file here is written through a temporary
file and a rename, so a reader (or a second process) never sees a half-written one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

RESULT_FILES = ("summary.json", "model.pt", "metrics.jsonl")


def run_dir(root: Path, label: str, seed: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", label)
    return root / "runs" / safe / f"seed{seed}"


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def clear_run(directory: Path) -> None:
    """Remove a run's results and checkpoints, before it is trained again from scratch."""
    from tiltedsam.experiments.checkpoint import remove_checkpoints

    for name in RESULT_FILES:
        (directory / name).unlink(missing_ok=True)
    remove_checkpoints(directory / "checkpoint.pt")


def load_finished(directory: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary if the run finished with exactly ``config``; else None."""
    summary = directory / "summary.json"
    if not summary.exists() or not (directory / "model.pt").exists():
        return None
    try:
        stored = json.loads(summary.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get("result"), dict):
        return None
    if json.loads(json.dumps(config, default=str)) != stored.get("config"):
        return None
    return stored


class Claim:
    """Exclusive ownership of a run directory while it trains (the ``claim`` file in it).

    On POSIX the claim is an ``flock`` on that file: the kernel releases it when its process
    exits, even on SIGKILL, so a dead sweep's claim never blocks another, and the file's
    content (the owner's pid) is only informative.  Without ``fcntl`` (Windows) the file is
    created with ``O_EXCL``.
    """

    def __init__(self, directory: Path, fd: int) -> None:
        self.path = directory / "claim"
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the claim up (unlink the file, then unlock)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run(directory: Path, *, wait: bool = False) -> Claim | None:
    """Claim ``directory`` for this process; None if a live process holds it (``wait=False``).

    With ``wait=True``, block until the holder is done.
    """
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return _claim_exclusive(directory, wait)
    path = directory / "claim"
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        # The holder we waited for may have unlinked the file before unlocking it: only a lock
        # on the file that is at ``path`` now counts.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return Claim(directory, fd)
        os.close(fd)


def _claim_exclusive(directory: Path, wait: bool) -> Claim | None:  # pragma: no cover
    """Without ``flock``: an ``O_EXCL`` file; a leftover one must be removed by hand."""
    path = directory / "claim"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if not wait:
            return None
        raise RuntimeError(
            f"{path} is held by another process, or was left by one that died: delete it if "
            "nothing is training in this directory"
        ) from None
    os.write(fd, str(os.getpid()).encode())
    return Claim(directory, fd)
