"""Tables (Markdown, CSV) and plots (PNG, headless matplotlib) from run results.

This module only renders: the runs come from the commands or from the run store
(:func:`~tiltedsam.experiments.store.load_runs`), what is selected from
:mod:`tiltedsam.experiments.selection`, the figures are drawn by
:mod:`tiltedsam.experiments.report_figures`, and every file is written atomically
(:mod:`tiltedsam._files`).  A value over seeds is written ``mean ± std``, or ``value (n = 1)``
for a single seed (:func:`format_mean_std`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiltedsam._files import write_atomic
from tiltedsam.experiments.report_figures import (
    plot_accuracy,
    plot_tilt,
    plot_tilt_convergence,
    plot_wall,
    seeds_note,
)
from tiltedsam.experiments.selection import (
    group_by_method,
    mixed_settings,
    ordered_labels,
    select_on_validation,
)
from tiltedsam.experiments.store import load_runs, point_key, run_key
from tiltedsam.optim import parse_method

# What every run of a table must hold: a run without one is an error naming its summary file,
# never a run silently left out of a mean (its seed still counted).
REQUIRED = ("method", "seed", "test_accuracy", "test_loss", "train_loss", "wall_time", "steps",
            "closure_calls", "history")  # fmt: skip


def where(result: dict[str, Any], root: str | Path | None) -> str:
    """The summary file a result was read from (or would be written to), else its label."""
    config = result.get("config")
    if root is not None and isinstance(config, dict) and {"method", "seed"} <= config.keys():
        name = f"{run_key(config)}-seed{config['seed']}"
        return str(Path(root) / "runs" / str(config["method"]) / name / "summary.json")
    return f"run {result.get('method')!r} seed {result.get('seed')}"


def check_results(
    results: Sequence[dict[str, Any]],
    root: str | Path | None = None,
    required: Sequence[str] = REQUIRED,
) -> None:
    """Every result holds what the tables average (``required``, a non-empty history), and
    a label's runs all have a validation accuracy or none does; else a ``ValueError`` naming
    the run's summary file and what it lacks."""
    for r in results:
        missing = [k for k in required if r.get(k) is None]
        if missing or not r.get("history"):
            why = f" (the run diverged: {r['diverged']})" if r.get("diverged") else ""
            raise ValueError(
                f"{where(r, root)}: the run's result has no {', '.join(missing or ['history'])}"
                f"{why}; it cannot be averaged with the others. Delete it or train it again "
                "(--rerun)"
            )
    for label, runs in group_by_method(results).items():
        lacking = [r for r in runs if r.get("val_accuracy") is None]
        if lacking and len(lacking) < len(runs):
            raise ValueError(
                f"{where(lacking[0], root)}: the run has no val_accuracy but other runs of "
                f"{label!r} do; the mean would silently leave it out"
            )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``"43.10 ± 0.52"`` over several values, ``"43.00 (n = 1)"`` for one (no ± of a single
    seed), ``"–"`` for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n = 1)"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: test accuracy mean ± std over seeds, train loss, wall time and its ratio to ERM."""
    groups = group_by_method(results)
    erm = groups.get("erm")
    erm_time = statistics.fmean(r["wall_time"] for r in erm) if erm else math.nan
    lines = [
        "| method | seeds | test acc (%) | final train loss | passes/step | wall time (s) | time / ERM |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, runs in groups.items():
        accuracy = format_mean_std([100 * r["test_accuracy"] for r in runs])
        loss_mean, _ = mean_std([r["train_loss"] for r in runs])
        time_mean, _ = mean_std([r["wall_time"] for r in runs])
        passes = runs[0]["closure_calls"] / runs[0]["steps"]
        ratio = f"{time_mean / erm_time:.1f}×" if erm else "–"
        lines.append(
            f"| {method} | {len(runs)} | {accuracy} | {loss_mean:.4f} | "
            f"{passes:g} | {time_mean:.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def write_compare_report(results: list[dict[str, Any]], root: Path, header: str = "") -> str:
    """Write ``results.csv``, ``metrics.csv``, ``results.json``, ``summary.md`` and
    ``accuracy.png`` of a ``compare`` under ``root``; returns the table."""
    check_results(results, root)
    table = summary_table(results)
    write_atomic(root / "summary.md", header + "\n" + table)
    fields = ["method", "seed", "test_accuracy", "test_loss", "train_loss", "train_accuracy",
              "wall_time", "cpu_time", "steps", "closure_calls"]  # fmt: skip
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    write_atomic(root / "results.csv", handle.getvalue())
    # Columns by name: a run read back from summary.json has its epoch keys in another order
    # than one trained in this process (positional rows put values under the wrong header).
    epoch_fields = list(dict.fromkeys(k for r in results for h in r["history"] for k in h))
    handle = io.StringIO(newline="")
    rows = csv.DictWriter(handle, fieldnames=["method", "seed", *epoch_fields])
    rows.writeheader()
    for r in results:
        for h in r["history"]:
            rows.writerow({"method": r["method"], "seed": r["seed"], **h})
    write_atomic(root / "metrics.csv", handle.getvalue())
    plot_accuracy(results, root / "accuracy.png")
    write_atomic(root / "results.json", json.dumps(results, indent=1))
    return table


def load_results(root: str | Path) -> list[dict[str, Any]]:
    """Every finished run under ``root`` (:func:`~tiltedsam.experiments.store.load_runs`); an
    error when one label holds runs of different settings (they are not seeds of one
    configuration: report them from separate directories)."""
    results = load_runs(root)
    mixed = mixed_settings(results)
    if mixed:
        label, keys = next(iter(mixed.items()))
        raise ValueError(
            f"{root}: the runs of {label!r} differ in {', '.join(keys)} (runs with other settings "
            f"share the directory); report each setting from its own output directory"
            + (f" ({len(mixed) - 1} more label(s) like it)" if len(mixed) > 1 else "")
        )
    return results


def _row(label: str, runs: list[dict[str, Any]]) -> str:
    def ms(key: str) -> str:
        return format_mean_std([100 * r[key] for r in runs if r.get(key) is not None])

    wall = statistics.fmean(r["wall_time"] for r in runs)
    cpu_times = [r["cpu_time"] for r in runs if r.get("cpu_time") is not None]
    cpu = f"{statistics.fmean(cpu_times):.1f}" if len(cpu_times) == len(runs) else "–"
    return (f"| {label} | {len(runs)} | {ms('val_accuracy')} | {ms('test_accuracy')} | {wall:.1f} "
            f"| {cpu} |")  # fmt: skip


REPORT_TITLES = {"sweep": "Sweep report", "compare": "Comparison report", "runs": "Report"}


def sweep_settings(root: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep directory (its grid and selection seeds); {} if there is none."""
    path = Path(root) / "sweep.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _as_grid_points(
    results: list[dict[str, Any]], settings: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each stored run under the label of its grid point (``sweep.json``'s point keys): a run
    keeps the label of the command that trained it first (a ``compare`` before the sweep)."""
    points = settings.get("points") or {}
    out = []
    for r in results:
        label = points.get(point_key(r["config"])) if r.get("config") else None
        out.append(r if label is None else {**r, "method": label})
    return out


def write_sweep_report(root: str | Path, results: list[dict[str, Any]] | None = None) -> str:
    """``report.md`` (selected configs and all configs) and PNG plots under ``root``, of
    ``results`` (the runs of a sweep) or of every run stored under ``root``.

    Titled by what ``root`` holds (a sweep, a compare, or runs).  Figures: test accuracy by
    epoch (``accuracy.png`` in a compare directory, redrawn; ``accuracy_vs_epoch.png`` of the
    selected configurations otherwise), accuracy against t (only with two tilts or more),
    TSAM's convergence for each t (with a t-curve) and the training time per method."""
    root = Path(root)
    settings = sweep_settings(root)
    left_out = 0
    if results is None:
        results = load_results(root)
        grid = {parse_method(spec).label for spec in settings.get("grid", [])}
        if grid:  # a sweep directory: its points only (not a pruned search trial's runs)
            kept = [r for r in _as_grid_points(results, settings) if r["method"] in grid]
            left_out, results = len(results) - len(kept), kept
    if not results:
        raise FileNotFoundError(f"no finished runs under {root}/runs/")
    check_results(results, root)
    select_seeds = settings.get("select_seeds")
    order = [parse_method(spec).label for spec in settings.get("grid", [])]
    groups = group_by_method(results)
    groups = {label: groups[label] for label in ordered_labels(groups, order)}
    pool = results if select_seeds is None else [r for r in results if r["seed"] in select_seeds]
    selected = select_on_validation(pool, order)
    header = (
        "| method | seeds | val acc (%) | test acc (%) | wall time (s) | CPU time (s) |\n"
        "|---|---|---|---|---|---|"
    )
    kind = "sweep" if settings else "compare" if (root / "summary.md").exists() else "runs"
    lines = [f"# {REPORT_TITLES[kind]}: {root.resolve().name}", ""]
    if selected:
        on = "" if select_seeds is None else f" of seeds {', '.join(map(str, select_seeds))}"
        lines += [f"Selected per method by mean validation accuracy{on} (test accuracy is reported, "
                  "never used for selection):", "", header]  # fmt: skip
        lines += [_row(label, groups[label]) for label in selected.values()]
        lines.append("")
    lines += ["All configurations:", "", header]
    lines += [_row(label, runs) for label, runs in groups.items()]
    if left_out:
        lines += ["", f"{left_out} finished run(s) under runs/ are not points of sweep.json's "
                  "grid (a pruned search trial's, or another command's) and are left out."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    chosen = [r for r in results if r["method"] in set(selected.values())] or list(results)
    # A compare directory's accuracy.png is the same figure: redraw it, no copy under a new name.
    figures = ["accuracy.png" if kind == "compare" else "accuracy_vs_epoch.png"]
    title = "Test accuracy by epoch" + (", configurations selected on validation" if selected
                                        else "")  # fmt: skip
    plot_accuracy(chosen, root / figures[0], title=f"{title} ({seeds_note(chosen)})")
    if plot_tilt(results, root / "accuracy_vs_t.png"):  # only with two tilts or more
        figures.append("accuracy_vs_t.png")
    curve = tilt_curve(results, selected.get("tsam"))
    if curve:
        text += "\n" + curve
        by_t = _tsam_by_tilt(results, selected.get("tsam"))
        reference = selected.get("tsam")
        setting = f"other options as in {reference}" if reference else ""
        plot_tilt_convergence(by_t, root / "convergence_vs_t.png", setting)
        figures.append("convergence_vs_t.png")
    plot_wall(chosen, root / "wall_time.png")
    figures.append("wall_time.png")
    text += "\nFigures: " + ", ".join(figures) + "\n"
    write_atomic(root / "report.md", text)
    return text


def _tsam_by_tilt(
    results: Sequence[dict[str, Any]], reference: str | None = None
) -> dict[float, list[dict[str, Any]]]:
    """TSAM runs grouped by t; with ``reference`` (a TSAM label), only the runs whose other
    options (lr, s, ρ, ...) equal that run's, so the curve varies t alone."""

    def rest(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r["config"].get("options", {}).items() if k != "tilt"}

    tsam = [r for r in results if r["config"]["method"] == "tsam"
            and "tilt" in r["config"].get("options", {})]  # fmt: skip
    ref = next((r for r in tsam if r["method"] == reference), None)
    by_t: dict[float, list[dict[str, Any]]] = {}
    for r in tsam:
        if ref is None or rest(r) == rest(ref):
            by_t.setdefault(float(r["config"]["options"]["tilt"]), []).append(r)
    return dict(sorted(by_t.items()))


def tilt_curve(results: Sequence[dict[str, Any]], reference: str | None = None) -> str:
    """Markdown: TSAM accuracy against t, and the convergence speed (test accuracy after 25%
    and 50% of the epochs, training objective at 50%), mean ± std over the seeds of each t
    (paper Fig. 3); other options fixed at those of ``reference`` (the selected TSAM run)."""
    by_t = _tsam_by_tilt(results, reference)
    if len(by_t) < 2:
        return ""
    fixed = "" if reference is None else f"; other options as in {reference}"
    lines = [f"TSAM against the tilt t (accuracy in %, mean ± std over seeds{fixed}):", "",
             "| t | seeds | val acc | test acc | test acc at 25% of epochs | at 50% | "
             "train loss at 50% | wall time (s) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t, runs in by_t.items():

        def at(fraction: float, key: str, runs=runs) -> str:
            values = []
            for r in runs:
                history = r.get("history") or []
                if history:
                    index = max(0, math.ceil(fraction * len(history)) - 1)
                    values.append(history[index][key] * (100 if "accuracy" in key else 1))
            return format_mean_std(values, 2 if "accuracy" in key else 3)

        row = _row(f"{t:g}", runs).split(" | ")
        wall = statistics.fmean(r["wall_time"] for r in runs)
        lines.append(f"| {t:g} | {len(runs)} | {row[2]} | {row[3]} | {at(0.25, 'test_accuracy')} | "
                     f"{at(0.5, 'test_accuracy')} | {at(0.5, 'step_loss')} | {wall:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
