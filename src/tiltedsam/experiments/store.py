"""The run store: every run of every harness command, keyed by its whole configuration.

A run is a :class:`RunConfig`: the method with every option it trains with (the table's
defaults and the run's shared lr and weight decay filled in), the seed, the data settings and the
training settings.  It lives in ``ROOT/runs/<method>/<key>-seed<k>/``, ``key`` the first 12 hex
digits of the SHA-256 of the canonical JSON of the configuration, so runs with other settings
never meet in one directory: two commands with different epochs (or a compare and a sweep with
the same settings) into one output directory keep both results, and only ``rerun=True``
(``--rerun``) replaces a finished run.  :func:`run_or_load` is the one way a command gets a
run's result: read back when finished, else claimed (:func:`claim_run`), trained (resuming its
checkpoint) and stored.

A run directory holds ``config.json`` (written first), ``checkpoint.pt`` while it trains,
``metrics.jsonl``, ``model.pt`` and ``summary.json`` (written last: a directory holding it is a
finished run).  Every file is written by :func:`tiltedsam._files.write_atomic`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiltedsam import __version__
from tiltedsam._files import write_json
from tiltedsam.experiments.checkpoint import remove_checkpoints
from tiltedsam.optim import METHODS

RESULT_FILES = ("summary.json", "model.pt", "metrics.jsonl")


def canonical(value: Any) -> Any:
    """JSON-normalised (tuples become lists, floats stay floats), for keys and comparisons."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def run_key(config: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the canonical run configuration."""
    text = json.dumps(canonical(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def full_options(method: str, options: Mapping[str, Any], shared: Mapping[str, Any]) -> dict:
    """Every option a run trains with: the run's ``shared`` settings (lr, weight decay), the
    table's defaults, then ``options``; an int given for a float default becomes a float
    (``tilt=1`` is the default 1.0), so two spellings of one training give one dict."""
    defaults = {**shared, **METHODS[method].defaults}
    merged = {**defaults, **options}
    for key, value in options.items():
        default = defaults.get(key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            merged[key] = float(value)
    return canonical(merged)


@dataclass(frozen=True)
class RunConfig:
    """What a run is (one schema for ``compare``, ``sweep``, ``study`` and ``glue``).

    ``options`` are the method's full options (:func:`full_options`); ``data`` the data
    settings (``name``, noise, subset, split, the data seed, ...); ``train`` the training
    settings (the command's config dataclass, default-valued late fields left out)."""

    method: str
    options: dict[str, Any]
    seed: int
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return canonical({"method": self.method, "options": self.options, "seed": self.seed,
                          "data": self.data, "train": self.train})  # fmt: skip

    @property
    def key(self) -> str:
        return run_key(self.as_dict())

    def directory(self, root: str | Path) -> Path:
        return Path(root) / "runs" / self.method / f"{self.key}-seed{self.seed}"


def read_summary(directory: Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored ``{"config", "result"}`` of the finished run in ``directory``; None if it has
    not finished.  A summary that cannot be read, or that holds another configuration than its
    key says, is an error naming the file (a damaged store is never trained over silently)."""
    summary = directory / "summary.json"
    if not summary.exists():
        return None
    try:
        stored = json.loads(summary.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{summary}: unreadable run summary ({err}); delete it, or pass --rerun, to train "
            "the run again"
        ) from None
    if not isinstance(stored, dict) or not isinstance(stored.get("result"), dict):
        raise ValueError(f"{summary}: not a run summary (no 'result'); delete it to rerun")
    if stored.get("config") != canonical(config):
        raise ValueError(f"{summary}: written for another configuration than its key says")
    return stored


def clear_run(directory: Path) -> None:
    """Remove a run's results and checkpoints, before it is trained again from scratch."""
    for name in RESULT_FILES:
        (directory / name).unlink(missing_ok=True)
    remove_checkpoints(directory / "checkpoint.pt")


def run_or_load(
    root: str | Path,
    config: RunConfig,
    train: Callable[[Path], dict[str, Any]],
    *,
    rerun: bool = False,
    wait: bool = True,
    on_wait: Callable[[Path], None] | None = None,
) -> dict[str, Any] | None:
    """The result of the run ``config`` under ``root``: read back if finished, else trained by
    ``train(directory)`` (which writes the run's files there and returns its result dict).

    The run is claimed while it trains, and checked again once claimed, so two processes never
    train one run.  If another process holds it: with ``wait`` this blocks until it is done
    (``on_wait`` is told first), without it returns None.  ``rerun`` clears a finished run and
    trains it again; otherwise an unfinished run resumes from its checkpoint."""
    directory = config.directory(root)
    settings = config.as_dict()
    if not rerun:
        stored = read_summary(directory, settings)
        if stored is not None:
            return stored["result"]
    claim = claim_run(directory)
    if claim is None:
        if not wait:
            return None
        if on_wait is not None:
            on_wait(directory)
        claim = claim_run(directory, wait=True)
    with claim:
        if rerun:
            clear_run(directory)
        else:
            stored = read_summary(directory, settings)  # finished by another process meanwhile?
            if stored is not None:
                return stored["result"]
        write_json(directory / "config.json", {**settings, "version": __version__})
        result = train(directory)
        write_json(directory / "summary.json",
                   {"config": settings, "result": result, "version": __version__})  # fmt: skip
        remove_checkpoints(directory / "checkpoint.pt")
    return result


def load_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every finished run under ``root/runs``: its result with the configuration it ran."""
    out = []
    for summary in sorted(Path(root).glob("runs/*/*/summary.json")):
        try:
            stored = json.loads(summary.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{summary}: unreadable run summary ({err})") from None
        out.append({**stored["result"], "config": stored["config"]})
    return out


# ------------------------------------------------------------------------------------- claims
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


__all__ = [
    "Claim",
    "RunConfig",
    "canonical",
    "claim_run",
    "clear_run",
    "full_options",
    "load_runs",
    "read_summary",
    "run_key",
    "run_or_load",
]
