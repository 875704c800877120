"""Issue #22, item 3: best validation accuracy reached against cumulative CPU time, for a grid
sweep and a ``--search tpe`` sweep of the same space (docs/harness.md, "Adaptive search").

    python benchmarks/search_vs_grid.py GRID_DIR TPE_DIR

Reads the run store of each directory: every run in the order it last wrote its metrics (the
order it trained), its CPU time (the last epoch record's ``cpu_time``: a pruned run counts what
it used) and, for finished runs only, its final validation accuracy (pruned runs are never
selected).  Prints a Markdown table: after k runs, the cumulative CPU time and the best
validation accuracy so far (with that run's test accuracy) of each sweep.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def trajectory(root: Path) -> list[tuple[float, float | None, float | None, bool]]:
    """Per run in training order: (cumulative CPU s, best val so far, its test acc, finished)."""
    runs = []
    for metrics in Path(root).glob("runs/*/*/metrics.jsonl"):
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        finished = (metrics.parent / "summary.json").exists()
        runs.append((metrics.stat().st_mtime, records[-1], finished))
    out, total, best, test = [], 0.0, None, None
    for _, last, finished in sorted(runs, key=lambda r: r[0]):
        total += last["cpu_time"]
        if finished and (best is None or last["val_accuracy"] > best):
            best, test = last["val_accuracy"], last["test_accuracy"]
        out.append((total, best, test, finished))
    return out


def table(grid: Path, tpe: Path) -> str:
    a, b = trajectory(grid), trajectory(tpe)

    def cell(row) -> str:
        if row is None:
            return " | | "
        total, best, test, finished = row
        shown = "–" if best is None else f"{100 * best:.1f} ({100 * test:.1f})"
        return f" {total:.0f} | {shown} | {'' if finished else 'pruned'}"

    lines = ["| runs | grid: CPU s | grid: best val (its test) % | | TPE: CPU s | TPE: best val "
             "(its test) % | |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for k in range(max(len(a), len(b))):
        left = a[k] if k < len(a) else None
        right = b[k] if k < len(b) else None
        lines.append(f"| {k + 1} |{cell(left)} |{cell(right)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(Path(sys.argv[1]), Path(sys.argv[2])), end="")
