"""The two figures of a study section (:mod:`tiltedsam.experiments.study_report`): the training
curves of the final selections and TSAM's t-curve against the ERM and SAM selections.  ``view``
is a :class:`~tiltedsam.experiments.study_report.StudyView`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiltedsam._files import save_figure
from tiltedsam.experiments.selection import best_epoch
from tiltedsam.experiments.stats import mean_interval

NAMES = {"erm": "ERM", "sam": "SAM", "tsam": "TSAM"}


def final_test(result: dict[str, Any]) -> float:
    return float(result["history"][-1]["test_accuracy"])


def early_test(result: dict[str, Any]) -> float:
    """Test accuracy at the epoch of best validation accuracy (early stopping)."""
    return float(best_epoch(result)["test_accuracy"])


def tcurve_points(view: Any) -> tuple[list[int], list[tuple[float, list[dict[str, Any]]]]]:
    """TSAM's t-curve on the seeds every tilt with a finished run has: ``(seeds, [(t, runs)])``.

    A study still running has some tilts on more seeds than others (t = 1 is often the final
    selection, run on every report seed); means over other seeds would show a difference of
    seeds as one of tilts."""
    finished = {t: runs for t, runs in sorted(view.tcurve.items()) if runs}
    if not finished:
        return [], []
    seeds = sorted(set.intersection(*(set(runs) for runs in finished.values())))
    if not seeds:
        return [], []
    return seeds, [(t, [runs[s] for s in seeds]) for t, runs in finished.items()]


def mean_std(values: Any) -> tuple[Any, Any]:
    """Mean and sample standard deviation (ddof 1, as in the tables) over the first axis; a
    zero band for one row."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])
    return values.mean(0), std


COLORS = {"erm": "tab:gray", "sam": "tab:blue", "tsam": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label_log_axis(ax: Any) -> None:
    """Log-scale y with enough labels to read: every tick within a decade, 1-2-5 per decade
    over up to three decades (one labelled power of ten is not readable), powers beyond."""
    import math

    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    low, high = ax.get_ylim()
    decades = math.log10(high / low)
    if decades < 1:
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        return
    if decades <= 3:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_curves(view: Any, path: Path) -> bool:
    """The objective each method minimised (its epoch mean over steps, on the labels trained on)
    and test accuracy per epoch of the final selections, mean over seeds with a band of ± one
    std."""
    import numpy as np

    if not any(view.final.values()):
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for m, runs in view.final.items():
        if not runs:
            continue
        for ax, key, scale in ((axes[0], "step_loss", 1.0), (axes[1], "test_accuracy", 100.0)):
            values = np.array([[scale * h[key] for h in r["history"]] for r in runs.values()])
            epochs = np.arange(1, values.shape[1] + 1)
            mean, std = mean_std(values)
            ax.plot(epochs, mean, color=COLORS.get(m), label=f"{NAMES.get(m, m)} (n = {len(runs)})")
            ax.fill_between(epochs, mean - std, mean + std, color=COLORS.get(m), alpha=0.2, lw=0)
    from matplotlib.ticker import MaxNLocator

    _label_log_axis(axes[0])
    axes[0].set_ylabel("objective minimised, epoch mean")
    axes[0].set_title("ERM: L(θ); SAM: L(θ+ε); TSAM: tilted L (labels trained on)", fontsize=9)
    axes[1].set_title("test accuracy (clean test labels)", fontsize=9)
    axes[1].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=9)
    fig.suptitle(f"{view.config.name}: final selections, mean ± std over seeds", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_tcurve(view: Any, path: Path) -> bool:
    """Final and best-val-epoch test accuracy against t (95% CIs), ERM and SAM as bands, all on
    the seeds every tilt has finished (:func:`tcurve_points`)."""
    seeds, points = tcurve_points(view)
    if len(points) < 2:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110, sharey=False)
    xs = [t for t, _ in points]
    for ax, metric, runs_of, title in ((axes[0], final_test, view.final, "final model"),
                                      (axes[1], early_test, view.early, "early stopped")):  # fmt: skip
        stats = [mean_interval([metric(r) for r in rs]) for _, rs in points]
        ax.errorbar(xs, [100 * m for m, _ in stats], yerr=[100 * h for _, h in stats], fmt="o-",
                    color=COLORS["tsam"], capsize=3, label="TSAM")  # fmt: skip
        for m in ("erm", "sam"):
            rs = [runs_of[m][s] for s in seeds if s in runs_of.get(m, {})]
            if rs:
                mean, half = mean_interval([metric(r) for r in rs])
                ax.axhline(100 * mean, color=COLORS[m], lw=1.2, label=f"{NAMES[m]} (selected)")
                ax.axhspan(100 * (mean - half), 100 * (mean + half), color=COLORS[m], alpha=0.15)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(min(xs) - 0.4 if min(xs) <= 1 else min(xs) / 1.4, max(xs) * 1.4)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{t:g}" for t in xs])
        ax.set_xlabel("tilt t")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{title}: mean and 95% CI over seeds", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=9, loc="best")
    fig.suptitle(f"{view.config.name} (seeds {', '.join(map(str, seeds))})", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True
