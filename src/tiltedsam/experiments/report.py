"""Tables (Markdown) and plots (PNG, headless matplotlib) from run results."""

from __future__ import annotations

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
