"""Step time against s and against the parameter count (``tiltedsam bench --scaling``), and
their plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiltedsam._plotting import finish, paper_style
from tiltedsam.bench.cases import Case, build_case
from tiltedsam.bench.runner import median, time_cases


def scaling_vs_s(
    model: str = "cnn1d",
    samples: Sequence[int] = (1, 2, 3, 4, 5, 6, 8),
    *,
    repeats: int = 20,
    batch_size: int | None = None,
    methods: Sequence[str] = ("tsam", "official"),
    device: str = "cpu",
) -> dict[str, Any]:
    """Median step time (wall and CPU) against s for ``methods``, with ERM for the 2s line."""
    cases = [Case(model, "erm")] + [Case(model, m, s) for s in samples for m in methods]
    built = {c: build_case(c, batch_size=batch_size, device=device) for c in cases}
    times = time_cases(built, repeats=repeats, device=device)
    out: dict[str, Any] = {"model": model, "samples": list(samples), "erm": {}, "methods": {}}
    out["erm"] = {k: median(v) for k, v in times[Case(model, "erm")].items()}
    for m in methods:
        out["methods"][m] = {
            clock: [median(times[Case(model, m, s)][clock]) for s in samples]
            for clock in ("wall", "cpu")
        }
    return out


def scaling_vs_params(
    widths: Sequence[int] = (32, 128, 512, 1024, 2048),
    s: int = 3,
    *,
    repeats: int = 20,
    batch_size: int = 64,
    methods: Sequence[str] = ("tsam", "official"),
    device: str = "cpu",
) -> dict[str, Any]:
    """Step time / (2s·ERM) against the parameter count of an MLP of growing width."""
    out: dict[str, Any] = {"s": s, "widths": list(widths), "params": [], "methods": {}}
    for m in methods:
        out["methods"][m] = {"wall": [], "cpu": []}
    for width in widths:
        kw = {"hidden": width}
        cases = [Case(f"mlp{width}", "erm")] + [Case(f"mlp{width}", m, s) for m in methods]
        built = {c: build_case(c, batch_size=batch_size, device=device, model_kwargs=kw)
                 for c in cases}  # fmt: skip
        out["params"].append(next(iter(built.values())).num_params)
        times = time_cases(built, repeats=repeats, device=device)
        erm = {k: median(v) for k, v in times[cases[0]].items()}
        for case in cases[1:]:
            for clock in ("wall", "cpu"):
                value = median(times[case][clock]) / (2 * s * erm[clock])
                out["methods"][case.method][clock].append(value)
    return out


def _compact(count: float) -> str:
    """A parameter count as a short tick label: ``2.7k``, ``289k``, ``1.1M``."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            value = count / scale
            return f"{value:.2g}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{count:g}"


def _count_axis(ax: Any, counts: list[float]) -> None:
    """A log axis with a tick at each measured count, labelled compactly; a label that would
    sit within a third of a decade of the previous one is left out (no overlapping labels)."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    shown: list[float] = []
    for c in sorted(counts):
        if not shown or math.log10(c) - math.log10(shown[-1]) >= 1 / 3:
            shown.append(c)
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_scaling(vs_s: dict[str, Any] | None, vs_params: dict[str, Any] | None, out_dir: Path,
                 clock: str = "cpu") -> list[Path]:  # fmt: skip
    """Step time against s with the ideal 2s·ERM line, and step time / (2s·ERM) against the
    parameter count: titled, labelled with units, readable at 100 % (``bench_time_vs_s.png``,
    ``bench_overhead_vs_params.png`` under ``out_dir``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    names = {"tsam": "TSAM (this package)", "official": "official semantics",
             "resample": "tsam-resample"}  # fmt: skip
    what = {"cpu": "CPU time", "wall": "wall time"}.get(clock, clock)
    with paper_style() as plt:
        if vs_s is not None:
            fig, ax = plt.subplots(figsize=(6.0, 4.0))
            samples = vs_s["samples"]
            erm = vs_s["erm"][clock]
            ax.plot(samples, [1e3 * 2 * s * erm for s in samples], "k--",
                    label="ideal: 2s × ERM step")  # fmt: skip
            for m, series in vs_s["methods"].items():
                ax.plot(samples, [1e3 * v for v in series[clock]], "o-", label=names.get(m, m))
            ax.set_xticks(samples)
            ax.set_xlabel("samples per step s")
            ax.set_ylabel(f"step time (ms, {what}, median)")
            ax.set_title(f"{vs_s['model']}: step time against s")
            ax.legend(loc="upper left")
            written.append(finish(fig, plt, out_dir / "bench_time_vs_s.png"))
        if vs_params is not None:
            fig, ax = plt.subplots(figsize=(6.0, 4.0))
            params = vs_params["params"]
            ax.axhline(1.0, color="k", linestyle="--", label="ideal: 2s × ERM step")
            for m, series in vs_params["methods"].items():
                ax.plot(params, series[clock], "o-", label=names.get(m, m))
            _count_axis(ax, params)
            ax.set_xlabel("trainable parameters (MLP of growing width)")
            ax.set_ylabel(f"step time / (2s × ERM step), {what}")
            ax.set_title(f"Overhead against model size (s = {vs_params['s']})")
            ax.legend(loc="upper left")
            written.append(finish(fig, plt, out_dir / "bench_overhead_vs_params.png"))
    return written


__all__ = ["plot_scaling", "scaling_vs_params", "scaling_vs_s"]
