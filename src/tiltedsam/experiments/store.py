"""Run directories: ``ROOT/runs/<method label>/seed<k>/{config.json,summary.json}``.

``summary.json`` is written last and atomically (temp file + rename), so a directory holding it
(with its ``model.pt``) is a finished run; a run whose stored config differs from the requested one is run again.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


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
