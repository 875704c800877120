"""Step time against s and against the parameter count (``tiltedsam bench --scaling``), and
their plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiltedsam._files import save_figure
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


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend, grid, layout; write ``path`` and close the figure."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_scaling(vs_s: dict[str, Any] | None, vs_params: dict[str, Any] | None, out_dir: Path,
                 clock: str = "cpu") -> list[Path]:  # fmt: skip
    """Small PNGs: step time vs s with the ideal 2s·ERM line; time/(2s·ERM) vs parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    names = {"tsam": "TSAM (ours)", "official": "official semantics", "resample": "tsam-resample"}
    if vs_s is not None:
        fig, ax = plt.subplots(figsize=(4.6, 3.2), dpi=90)
        samples = vs_s["samples"]
        erm = vs_s["erm"][clock]
        ax.plot(samples, [1e3 * 2 * s * erm for s in samples], "k--", label="ideal 2s·ERM")
        for m, series in vs_s["methods"].items():
            ax.plot(samples, [1e3 * v for v in series[clock]], "o-", label=names.get(m, m))
        ax.set_xticks(samples)
        ax.set_xlabel("samples s")
        ax.set_ylabel(f"step time, ms ({clock})")
        ax.set_title(f"{vs_s['model']}: step time vs s", fontsize=10)
        written.append(_save(fig, ax, out_dir / "bench_time_vs_s.png"))
    if vs_params is not None:
        fig, ax = plt.subplots(figsize=(4.6, 3.2), dpi=90)
        params = vs_params["params"]
        ax.axhline(1.0, color="k", linestyle="--", label="ideal 2s·ERM")
        for m, series in vs_params["methods"].items():
            ax.plot(params, series[clock], "o-", label=names.get(m, m))
        ax.set_xscale("log")
        ax.set_xlabel("parameters (MLP of growing width)")
        ax.set_ylabel(f"step time / (2s·ERM) ({clock})")
        ax.set_title(f"s = {vs_params['s']}: overhead vs model size", fontsize=10)
        written.append(_save(fig, ax, out_dir / "bench_overhead_vs_params.png"))
    return written


__all__ = ["plot_scaling", "scaling_vs_params", "scaling_vs_s"]
