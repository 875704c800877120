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
finished run).  Every file is written by :func:`tiltedsam._files.write_atomic`.  A run that
fails before it writes anything but ``config.json`` (a model that does not fit the data) is
removed again; one that fails later keeps what its resume needs.

The key holds the data's settings, not what its files hold (a moved file keeps its runs, and
the keys of stored runs never move).  What the files hold is the run's *data identity*
(:mod:`tiltedsam.data.fingerprint`), recorded in ``config.json`` and ``summary.json`` and
checked whenever a command would read the run back or resume it: a finished or unfinished run
trained on other data (``--data-path B.npz`` after ``A.npz``, same shapes, other labels) is a
:class:`DataMismatchError` naming the file and both sources, never A's result printed for B.
Runs stored before identities were recorded are read as they are.  The package version is
recorded beside them (informative: the numerics are held bit-identical across versions).
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
from tiltedsam.data.fingerprint import DataIdentity
from tiltedsam.experiments.checkpoint import remove_checkpoints
from tiltedsam.optim import METHODS

RESULT_FILES = ("summary.json", "model.pt", "metrics.jsonl")
IDENTITY = "data_identity"  # the key of the data identity in config.json and summary.json


class DataMismatchError(ValueError):
    """A stored run was trained on other data than the command reads (see the module doc)."""


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

    @property
    def point(self) -> str:
        """The key of the configuration without its seed: the grid point it is a seed of."""
        return point_key(self.as_dict())


def point_key(config: Mapping[str, Any]) -> str:
    """:func:`run_key` of a stored run configuration (``RunConfig.as_dict``) without its seed:
    equal for the seeds of one grid point, whatever label the command that trained it used."""
    return run_key({k: v for k, v in config.items() if k != "seed"})


def check_identity(
    path: Path,
    stored: Mapping[str, Any],
    identity: Callable[[], DataIdentity] | None,
    hint: str | None = None,
) -> None:
    """:class:`DataMismatchError` if ``stored`` (a summary or config.json read from ``path``)
    records a data identity other than ``identity()`` (computed only when one is recorded);
    ``hint`` replaces the message's advice."""
    recorded = stored.get(IDENTITY)
    if identity is None or not isinstance(recorded, dict):
        return  # no data identity here (handed-in data, or written before they were recorded)
    current = identity()
    if recorded.get("sha256") != current.sha256:
        raise DataMismatchError(
            f"{path}: this run was trained on other data than this command reads: it recorded "
            f"{recorded.get('source')} (sha256 {str(recorded.get('sha256'))[:12]}), this command "
            f"reads {current.source} (sha256 {current.sha256[:12]}). "
            + (
                hint
                or f"Its result belongs to those data: give these data another --out, or "
                f"delete {path.parent} (compare: --rerun) to train the run again on them"
            )
        )


def read_summary(
    directory: Path,
    config: Mapping[str, Any],
    identity: Callable[[], DataIdentity] | None = None,
) -> dict[str, Any] | None:
    """The stored ``{"config", "result"}`` of the finished run in ``directory``; None if it has
    not finished.  A summary that cannot be read, or that holds another configuration than its
    key says, is an error naming the file (a damaged store is never trained over silently);
    one trained on data of another identity is a :class:`DataMismatchError`."""
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
    check_identity(summary, stored, identity)
    return stored


def _check_unfinished(directory: Path, identity: Callable[[], DataIdentity] | None) -> None:
    """An unfinished run (a checkpoint or metrics) whose config.json records other data."""
    started = [directory / name for name in ("checkpoint.pt", "checkpoint.prev.pt",
                                             "metrics.jsonl")]  # fmt: skip
    path = directory / "config.json"
    if identity is None or not path.exists() or not any(p.exists() for p in started):
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # informative only; the checkpoint's own fingerprint still guards the resume
    if isinstance(stored, dict):
        check_identity(path, stored, identity)


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
    identity: Callable[[], DataIdentity] | None = None,
) -> dict[str, Any] | None:
    """The result of the run ``config`` under ``root``: read back if finished, else trained by
    ``train(directory)`` (which writes the run's files there and returns its result dict).

    The run is claimed while it trains, and checked again once claimed, so two processes never
    train one run.  If another process holds it: with ``wait`` this blocks until it is done
    (``on_wait`` is told first), without it returns None.  ``rerun`` clears a finished run and
    trains it again; otherwise an unfinished run resumes from its checkpoint.

    ``identity`` gives the data identity of what ``train`` reads (called at most once, when it
    is recorded or checked): it is recorded with the run, and a stored run, finished or not,
    of another identity is a :class:`DataMismatchError` (``rerun`` trains it again)."""
    directory = config.directory(root)
    settings = config.as_dict()
    if identity is not None:
        identity = _once(identity)
    if not rerun:
        stored = read_summary(directory, settings, identity)
        if stored is not None:
            return stored["result"]
    claim = claim_run(directory)
    if claim is None:
        if not wait:
            return None
        if on_wait is not None:
            on_wait(directory)
        claim = claim_run(directory, wait=True)
    try:
        with claim:
            if rerun:
                clear_run(directory)
            else:  # finished by another process meanwhile?
                stored = read_summary(directory, settings, identity)
                if stored is not None:
                    return stored["result"]
                _check_unfinished(directory, identity)
            recorded = {} if identity is None else {IDENTITY: identity().as_dict()}
            write_json(directory / "config.json", {**settings, **recorded, "version": __version__})
            result = train(directory)
            write_json(directory / "summary.json", {"config": settings, "result": result,
                                                    **recorded, "version": __version__})  # fmt: skip
            remove_checkpoints(directory / "checkpoint.pt")
    except BaseException:
        _remove_if_untouched(directory)
        raise
    return result


def _remove_if_untouched(directory: Path) -> None:
    """After a failed run: remove its directory if training wrote nothing there (a run that
    failed before its first epoch, e.g. on a model that does not fit the data, leaves no
    half-made run behind); anything else, a checkpoint or metrics, is kept for the resume."""
    try:
        if {p.name for p in directory.iterdir()} <= {"config.json"}:
            (directory / "config.json").unlink(missing_ok=True)
            directory.rmdir()  # fails harmlessly if another process claimed it meanwhile
    except OSError:
        pass


def _once(identity: Callable[[], DataIdentity]) -> Callable[[], DataIdentity]:
    found: list[DataIdentity] = []

    def cached() -> DataIdentity:
        if not found:
            found.append(identity())
        return found[0]

    return cached


def load_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every finished run under ``root/runs``: its result with the configuration it ran and,
    where recorded, the identity of its data (``data_identity``)."""
    out = []
    for summary in sorted(Path(root).glob("runs/*/*/summary.json")):
        try:
            stored = json.loads(summary.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{summary}: unreadable run summary ({err})") from None
        if not isinstance(stored, dict) or not isinstance(stored.get("result"), dict):
            raise ValueError(f"{summary}: not a run summary (no 'result'); delete it to rerun")
        recorded = {IDENTITY: stored[IDENTITY]} if IDENTITY in stored else {}
        out.append({**stored["result"], "config": stored.get("config"), **recorded})
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
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return _claim_exclusive(directory, wait)
    path = directory / "claim"
    while True:  # (re)made each time: a failed holder removes a run directory it left empty
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except (FileNotFoundError, FileExistsError):
            continue  # that removal happened between the two calls: again
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
    directory.mkdir(parents=True, exist_ok=True)
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
    "IDENTITY",
    "Claim",
    "DataMismatchError",
    "RunConfig",
    "canonical",
    "check_identity",
    "claim_run",
    "clear_run",
    "full_options",
    "load_runs",
    "point_key",
    "read_summary",
    "run_key",
    "run_or_load",
]
