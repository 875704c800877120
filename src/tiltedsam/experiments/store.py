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
    except (OSError, json.JSONDecodeError):
        return None
    if json.loads(json.dumps(config, default=str)) != stored.get("config"):
        return None
    return stored
