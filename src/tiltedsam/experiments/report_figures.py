"""The report's figures (PNG, headless matplotlib), drawn to be put in a paper as they are.

Every figure has a title that says what is averaged, labelled axes with units, readable type at
100 % (10-12 pt at 150 dpi), the spread over seeds (a band or error bars of ± one standard
deviation; ``n`` in the legend or the title) and legends that are wrapped, never cut.  A figure
that would show nothing to compare (``accuracy_vs_t.png`` with a single tilt) is not drawn.
The common look (type sizes, wrapping, the atomic save) is :mod:`tiltedsam._plotting`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiltedsam._plotting import count, finish, paper_style, wrap
from tiltedsam.experiments.selection import group_by_method
from tiltedsam.optim import METHODS


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def seeds_note(results: Sequence[dict[str, Any]]) -> str:
    """``mean ± 1 s.d. over 3 seeds`` (``2/3 seeds`` when methods differ; ``one seed each``)."""
    counts = sorted({len(runs) for runs in group_by_method(results).values()})
    if counts == [1]:
        return "one seed each"
    text = "/".join(map(str, counts))
    return f"mean ± 1 s.d. over {text} seeds"


def plot_accuracy(results: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Test accuracy against the epoch, one line per method: the mean over seeds with a band of
    ± one standard deviation; n per method in the legend."""
    groups = group_by_method(results)
    lows: list[float] = []  # the lower band edges, so the y-range never cuts a band
    with paper_style() as plt:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for method, runs in groups.items():
            epochs = [h["epoch"] for h in runs[0]["history"]]
            length = min(len(r["history"]) for r in runs)
            curves = [[100 * h["test_accuracy"] for h in r["history"][:length]] for r in runs]
            stats = [spread(col) for col in zip(*curves, strict=True)]
            mean = [m for m, _ in stats]
            (line,) = ax.plot(epochs[:length], mean, marker="o", ms=3,
                              label=wrap(f"{method} {count(len(runs))}"))  # fmt: skip
            if len(runs) > 1:
                ax.fill_between(epochs[:length], [m - s for m, s in stats],
                                [m + s for m, s in stats], alpha=0.2, color=line.get_color())  # fmt: skip
                lows += [m - s for m, s in stats]
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(wrap(title or f"Test accuracy by epoch ({seeds_note(results)})", 64))
        _integer_ticks(ax)
        finite = [100 * h["test_accuracy"] for r in results for h in r["history"]]
        top = max(finite)
        ax.set_ylim(max(min(finite + lows), top - 30) - 1, min(100, top + 2))
        _legend(ax, len(groups))
        finish(fig, plt, path)


def _legend(ax: Any, entries: int) -> None:
    """Inside the axes for a few entries, to the right of them for more."""
    if entries <= 4:
        ax.legend(loc="best")
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def tilt_lines(results: Sequence[dict[str, Any]]) -> dict[str, dict[float, list[dict[str, Any]]]]:
    """Runs of the tilted methods grouped by their other options, then by t."""
    tilted = {name for name, info in METHODS.items() if "tilt" in info.defaults}
    lines: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for r in results:
        options = r["config"].get("options", {})
        if r["config"]["method"] not in tilted or "tilt" not in options:
            continue
        rest = ", ".join(f"{k}={v}" for k, v in sorted(options.items()) if k != "tilt")
        name = f"{r['config']['method']} ({rest})" if rest else r["config"]["method"]
        lines.setdefault(name, {}).setdefault(float(options["tilt"]), []).append(r)
    return lines


def plot_tilt(results: Sequence[dict[str, Any]], path: Path) -> bool:
    """Test and validation accuracy against t (mean ± one standard deviation over seeds), one
    panel per setting of the other options that was run at two tilts or more.  Returns whether
    it drew anything (a single tilt is not a curve: no file then)."""
    curves = {name: by_t for name, by_t in tilt_lines(results).items() if len(by_t) >= 2}
    if not curves:
        return False
    with paper_style() as plt:
        fig, axes = plt.subplots(len(curves), 1, figsize=(6.4, 3.6 * len(curves)), squeeze=False)
        for ax, (name, by_t) in zip(axes[:, 0], curves.items(), strict=True):
            ts = sorted(by_t)
            seeds = sorted({len(by_t[t]) for t in ts})
            for key, label, marker in (("test_accuracy", "test", "o"),
                                       ("val_accuracy", "validation", "s")):  # fmt: skip
                if any(r.get(key) is None for t in ts for r in by_t[t]):
                    continue
                stats = [spread([100 * r[key] for r in by_t[t]]) for t in ts]
                ax.errorbar(ts, [m for m, _ in stats], yerr=[s for _, s in stats], marker=marker,
                            ms=4, capsize=3, label=label)  # fmt: skip
            _tilt_axis(ax, ts)
            ax.set_ylabel("accuracy (%)")
            n = "/".join(map(str, seeds))
            ax.set_title(wrap(f"Accuracy against the tilt t, mean ± 1 s.d. over {n} seeds: {name}",
                              70), fontsize=10)  # fmt: skip
            ax.legend(loc="best")
        finish(fig, plt, path)
    return True


def _tilt_axis(ax: Any, ts: Sequence[float]) -> None:
    """t on a symmetric log axis (t = 0 has a place), ticks at the tilts that were run."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    positive = [t for t in ts if t > 0]
    if positive and max(positive) / min(positive) >= 10:
        ax.set_xscale("symlog", linthresh=min(positive) if 0 in ts else min(positive) / 2)
    ax.xaxis.set_major_locator(FixedLocator(list(ts)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("tilt t (log scale)" if ax.get_xscale() != "linear" else "tilt t")


def plot_tilt_convergence(by_t: dict[float, list[dict[str, Any]]], path: Path,
                          setting: str = "") -> None:  # fmt: skip
    """Test accuracy and training objective against the epoch, one line per t (mean over
    seeds)."""
    with paper_style() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8))
        seeds = set()
        for t, runs in by_t.items():
            histories = [r["history"] for r in runs if r.get("history")]
            if not histories:
                continue
            seeds.add(len(histories))
            epochs = min(len(h) for h in histories)
            xs = list(range(1, epochs + 1))
            for ax, key, scale in ((axes[0], "test_accuracy", 100), (axes[1], "step_loss", 1)):
                ys = [statistics.fmean(scale * h[e][key] for h in histories) for e in range(epochs)]
                ax.plot(xs, ys, marker="o", ms=3, label=f"t = {t:g}")
        axes[0].set_ylabel("test accuracy (%)")
        axes[1].set_ylabel("training objective (mean step loss)")
        for ax in axes:
            ax.set_xlabel("epoch")
            _integer_ticks(ax)
        axes[0].legend(loc="best")
        n = "/".join(map(str, sorted(seeds)))
        fig.suptitle(wrap(f"TSAM convergence for each tilt t (mean over {n} seeds)"
                          + (f": {setting}" if setting else ""), 100), fontsize=11)  # fmt: skip
        finish(fig, plt, path)


def plot_wall(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Training wall time per run, one horizontal bar per method (mean ± one standard deviation
    over seeds), full labels."""
    groups = group_by_method(results)
    names = list(groups)
    stats = [spread([r["wall_time"] for r in groups[n]]) for n in names]
    with paper_style() as plt:
        fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.55 * len(names)))
        rows = list(range(len(names)))
        ax.barh(rows, [m for m, _ in stats], xerr=[s for _, s in stats], capsize=3,
                color="tab:blue", alpha=0.8)  # fmt: skip
        ax.set_yticks(rows, [wrap(f"{n} {count(len(groups[n]))}", 32) for n in names])
        ax.invert_yaxis()  # first method on top
        ax.set_xlabel("training wall time per run (s)")
        ax.set_ylabel("method")
        ax.grid(axis="y", visible=False)
        ax.set_title(f"Training time ({seeds_note(results)})")
        finish(fig, plt, path)


__all__ = [
    "plot_accuracy",
    "plot_tilt",
    "plot_tilt_convergence",
    "plot_wall",
    "seeds_note",
    "spread",
    "tilt_lines",
]
