"""Tables (Markdown) and plots (PNG, headless matplotlib) from run results."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def group_by_method(results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(result["method"], []).append(result)
    return groups


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def load_results(root: Path) -> list[dict[str, Any]]:
    """Every finished run under ``root/runs``: its result with the config it ran."""
    import json

    out = []
    for summary in sorted(root.glob("runs/*/seed*/summary.json")):
        stored = json.loads(summary.read_text())
        out.append({**stored["result"], "config": stored["config"]})
    return out


def select_on_validation(results: Sequence[dict[str, Any]]) -> dict[str, str]:
    """For each optimizer name, the method label with the best mean validation accuracy."""
    best: dict[str, tuple[float, str]] = {}
    for label, runs in group_by_method(results).items():
        vals = [r["val_accuracy"] for r in runs if r.get("val_accuracy") is not None]
        if len(vals) != len(runs):
            continue
        name = runs[0]["config"]["method"]
        score = statistics.fmean(vals)
        if name not in best or score > best[name][0]:
            best[name] = (score, label)
    return {name: label for name, (_, label) in best.items()}


def _row(label: str, runs: list[dict[str, Any]]) -> str:
    def ms(key: str) -> str:
        values = [100 * r[key] for r in runs if r.get(key) is not None]
        if not values:
            return "–"
        mean, std = mean_std(values)
        return f"{mean:.2f} ± {std:.2f}"

    wall = statistics.fmean(r["wall_time"] for r in runs)
    return f"| {label} | {len(runs)} | {ms('val_accuracy')} | {ms('test_accuracy')} | {wall:.1f} |"


def write_sweep_report(root: str | Path) -> str:
    """``report.md`` (selected configs and all configs) and PNG plots under ``root``."""
    root = Path(root)
    results = load_results(root)
    if not results:
        raise FileNotFoundError(f"no finished runs under {root}/runs/")
    groups = group_by_method(results)
    settings = root / "sweep.json"
    select_seeds = (
        json.loads(settings.read_text()).get("select_seeds") if settings.exists() else None
    )
    pool = results if select_seeds is None else [r for r in results if r["seed"] in select_seeds]
    selected = select_on_validation(pool)
    header = (
        "| method | seeds | val acc (%) | test acc (%) | wall time (s) |\n|---|---|---|---|---|"
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
    (root / "report.md").write_text(text)
    chosen = [r for r in results if r["method"] in set(selected.values())] or list(results)
    plot_accuracy(chosen, root / "accuracy_vs_epoch.png")
    _plot_tilt(results, root / "accuracy_vs_t.png")
    _plot_wall(chosen, root / "wall_time.png")
    return text


def _plot_tilt(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Test (and validation) accuracy against t for TSAM runs, one line per other setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for r in results:
        options = r["config"].get("options", {})
        if r["config"]["method"] not in ("tsam", "tsam-naive") or "tilt" not in options:
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
    fig.savefig(path)
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
    fig.savefig(path)
    plt.close(fig)
