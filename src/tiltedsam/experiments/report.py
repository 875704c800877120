"""Tables (Markdown, CSV) and plots (PNG, headless matplotlib) from run results.

This module only renders: the runs come from the commands or from the run store
(:func:`~tiltedsam.experiments.store.load_runs`), what is selected from
:mod:`tiltedsam.experiments.selection`, and every file is written atomically
(:mod:`tiltedsam._files`).
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

from tiltedsam._files import save_figure, write_atomic
from tiltedsam.experiments.selection import (
    group_by_method,
    mixed_settings,
    ordered_labels,
    select_on_validation,
)
from tiltedsam.experiments.store import load_runs, run_key
from tiltedsam.optim import METHODS, parse_method

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
        acc_mean, acc_std = mean_std([100 * r["test_accuracy"] for r in runs])
        loss_mean, _ = mean_std([r["train_loss"] for r in runs])
        time_mean, _ = mean_std([r["wall_time"] for r in runs])
        passes = runs[0]["closure_calls"] / runs[0]["steps"]
        ratio = f"{time_mean / erm_time:.1f}×" if erm else "–"
        lines.append(
            f"| {method} | {len(runs)} | {acc_mean:.2f} ± {acc_std:.2f} | {loss_mean:.4f} | "
            f"{passes:g} | {time_mean:.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot_accuracy(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Test accuracy vs epoch, mean over seeds with a min–max band, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for method, runs in group_by_method(results).items():
        epochs = [h["epoch"] for h in runs[0]["history"]]
        curves = [[100 * h["test_accuracy"] for h in r["history"]] for r in runs]
        mean = [statistics.fmean(col) for col in zip(*curves, strict=True)]
        low = [min(col) for col in zip(*curves, strict=True)]
        high = [max(col) for col in zip(*curves, strict=True)]
        ax.plot(epochs, mean, label=method)
        if len(runs) > 1:
            ax.fill_between(epochs, low, high, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy (mean over seeds, band: min–max)")
    ax.grid(alpha=0.3)
    ax.legend()
    finite = [100 * h["test_accuracy"] for r in results for h in r["history"]]
    top = max(finite)
    ax.set_ylim(max(min(finite), top - 30), min(100, top + 2))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


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
    handle = io.StringIO(newline="")
    rows = csv.writer(handle)
    rows.writerow(["method", "seed", *results[0]["history"][0].keys()])
    for r in results:
        for h in r["history"]:
            rows.writerow([r["method"], r["seed"], *h.values()])
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
        values = [100 * r[key] for r in runs if r.get(key) is not None]
        if not values:
            return "–"
        mean, std = mean_std(values)
        return f"{mean:.2f} ± {std:.2f}"

    wall = statistics.fmean(r["wall_time"] for r in runs)
    cpu_times = [r["cpu_time"] for r in runs if r.get("cpu_time") is not None]
    cpu = f"{statistics.fmean(cpu_times):.1f}" if len(cpu_times) == len(runs) else "–"
    return (f"| {label} | {len(runs)} | {ms('val_accuracy')} | {ms('test_accuracy')} | {wall:.1f} "
            f"| {cpu} |")  # fmt: skip


def sweep_settings(root: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep directory (its grid and selection seeds); {} if there is none."""
    path = Path(root) / "sweep.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_sweep_report(root: str | Path, results: list[dict[str, Any]] | None = None) -> str:
    """``report.md`` (selected configs and all configs) and PNG plots under ``root``, of
    ``results`` (the runs of a sweep) or of every run stored under ``root``."""
    root = Path(root)
    results = load_results(root) if results is None else results
    if not results:
        raise FileNotFoundError(f"no finished runs under {root}/runs/")
    check_results(results, root)
    settings = sweep_settings(root)
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
    lines = ["# Sweep report", ""]
    if selected:
        on = "" if select_seeds is None else f" of seeds {', '.join(map(str, select_seeds))}"
        lines += [f"Selected per method by mean validation accuracy{on} (test accuracy is reported, "
                  "never used for selection):", "", header]  # fmt: skip
        lines += [_row(label, groups[label]) for label in selected.values()]
        lines.append("")
    lines += ["All configurations:", "", header]
    lines += [_row(label, runs) for label, runs in groups.items()]
    text = "\n".join(lines) + "\n"
    chosen = [r for r in results if r["method"] in set(selected.values())] or list(results)
    plot_accuracy(chosen, root / "accuracy_vs_epoch.png")
    _plot_tilt(results, root / "accuracy_vs_t.png")
    curve = tilt_curve(results, selected.get("tsam"))
    if curve:
        text += "\n" + curve
        _plot_tilt_convergence(results, root / "convergence_vs_t.png", selected.get("tsam"))
    write_atomic(root / "report.md", text)
    _plot_wall(chosen, root / "wall_time.png")
    return text


def _plot_tilt(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Test (and validation) accuracy against t for TSAM runs, one line per other setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tilted = {name for name, info in METHODS.items() if "tilt" in info.defaults}
    lines: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for r in results:
        options = r["config"].get("options", {})
        if r["config"]["method"] not in tilted or "tilt" not in options:
            continue
        rest = ",".join(f"{k}={v}" for k, v in sorted(options.items()) if k != "tilt")
        lines.setdefault(f"{r['config']['method']} {rest}", {}).setdefault(
            float(options["tilt"]), []
        ).append(r)
    if not lines:
        return
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, by_t in lines.items():
        ts = sorted(by_t)
        for key, style in (("test_accuracy", "o-"), ("val_accuracy", "x--")):
            ys = [statistics.fmean(100 * (r.get(key) or 0) for r in by_t[t]) for t in ts]
            if any(r.get(key) is None for t in ts for r in by_t[t]):
                continue
            ax.plot(ts, ys, style, label=f"{key.split('_')[0]} {name}"[:60])
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("tilt t")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


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
            if not values:
                return "–"
            mean, std = mean_std(values)
            return f"{mean:.2f} ± {std:.2f}" if "accuracy" in key else f"{mean:.3f} ± {std:.3f}"

        row = _row(f"{t:g}", runs).split(" | ")
        wall = statistics.fmean(r["wall_time"] for r in runs)
        lines.append(f"| {t:g} | {len(runs)} | {row[2]} | {row[3]} | {at(0.25, 'test_accuracy')} | "
                     f"{at(0.5, 'test_accuracy')} | {at(0.5, 'step_loss')} | {wall:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot_tilt_convergence(
    results: Sequence[dict[str, Any]], path: Path, reference: str | None = None
) -> None:
    """Test accuracy and training (tilted) loss against the epoch, one line per t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for t, runs in _tsam_by_tilt(results, reference).items():
        histories = [r["history"] for r in runs if r.get("history")]
        if not histories:
            continue
        epochs = min(len(h) for h in histories)
        xs = list(range(1, epochs + 1))
        for ax, key, scale in ((axes[0], "test_accuracy", 100), (axes[1], "step_loss", 1)):
            ys = [statistics.fmean(scale * h[e][key] for h in histories) for e in range(epochs)]
            ax.plot(xs, ys, "o-", ms=3, label=f"t={t:g}")
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].set_ylabel("training objective (step loss)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _plot_wall(results: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_by_method(results)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    names = list(groups)
    ax.bar(range(len(names)), [statistics.fmean(r["wall_time"] for r in groups[n]) for n in names])
    ax.set_xticks(range(len(names)), [n[:18] for n in names], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("training wall time (s)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
