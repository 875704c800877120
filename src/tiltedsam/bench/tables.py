"""The bench's Markdown tables: ratios, step times and memory (:func:`markdown`) and the
scaling measurements (:func:`scaling_markdown`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tiltedsam.bench.cases import Case
from tiltedsam.bench.runner import BenchResult


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(result: BenchResult) -> str:
    """The three tables (ratios, step times, memory) as Markdown, with the setting on top."""
    st = result.setting
    setting = (
        f"torch {st['torch']}, {st['device']}"
        + (f" ({st['device_name']})" if st.get("device_name") else "")
        + f", {st['threads']} thread(s), median of {st['repeats']} interleaved rounds, "
        + ("glibc heap kept (--keep-heap)" if st.get("heap") == "kept" else "default allocator")
        + "; batch "
        + ", ".join(f"{m} {b}" for m, b in st["batch_sizes"].items())
        + "."
    )
    names = ("tsam_over_floor", "tsam_over_official", "resample_over_sam", "batched_over_tsam")
    titles = ("TSAM / (2s·ERM)", "TSAM / official", "resample / SAM", "batched / TSAM")
    lines = [setting, ""]
    lines += _table(
        [
            "model",
            "s",
            *(f"{t} {c}" if c == "wall" else c for t in titles for c in ("wall", "cpu")),
        ],
        (
            [
                r["model"],
                str(r["s"]),
                *(_fmt(r.get(f"{n}_{c}")) for n in names for c in ("wall", "cpu")),
            ]
            for r in result.ratios
        ),
    )

    def passes(r: dict[str, Any]) -> str:
        if Case(r["model"], r["method"], r["s"]).forward_only:
            return f"{r['s']} fwd + {r['passes'] - r['s']}"
        return str(r["passes"])

    lines.append("")
    lines += _table(
        ["model", "params", "method", "s", "passes", "wall ms", "cpu ms", "wall / (passes·ERM)",
         "cpu / (passes·ERM)"],
        (
            [r["model"], f"{r['params']:,}", r["method"], str(r["s"] or ""), passes(r),
             f"{r['wall_ms']:.2f}", f"{r['cpu_ms']:.2f}", _fmt(r["wall_over_floor"]),
             _fmt(r["cpu_over_floor"])]
            for r in result.timing
        ),
    )  # fmt: skip
    if result.memory:
        lines.append("")
        lines += _table(
            ["model", "method", "s", "peak MB", "extra over ERM (MB)", "extra / parameter bytes"],
            (
                [r["model"], r["method"], str(r["s"] or ""), f"{r['peak_bytes'] / 2**20:.2f}",
                 f"{r['extra_over_erm_bytes'] / 2**20:.2f}", f"{r['param_buffers']:.2f}"]
                for r in result.memory
            ),
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def scaling_markdown(vs_s: dict[str, Any] | None, vs_params: dict[str, Any] | None) -> str:
    """The scaling measurements as Markdown tables (CPU-time medians)."""
    lines: list[str] = []
    if vs_s is not None:
        methods = list(vs_s["methods"])
        erm = vs_s["erm"]["cpu"]
        lines += [f"{vs_s['model']}: step time (ms, CPU) against s", ""]
        lines += _table(
            ["s", "ideal 2s·ERM", *methods],
            (
                [str(s), f"{1e3 * 2 * s * erm:.1f}",
                 *(f"{1e3 * vs_s['methods'][m]['cpu'][i]:.1f}" for m in methods)]
                for i, s in enumerate(vs_s["samples"])
            ),
        )  # fmt: skip
        lines.append("")
    if vs_params is not None:
        methods = list(vs_params["methods"])
        widths = zip(vs_params["widths"], vs_params["params"], strict=True)
        lines += [f"MLP of growing width, s = {vs_params['s']}: step time / (2s·ERM), CPU", ""]
        lines += _table(
            ["hidden width", "parameters", *methods],
            (
                [str(w), f"{n:,}", *(f"{vs_params['methods'][m]['cpu'][i]:.3f}" for m in methods)]
                for i, (w, n) in enumerate(widths)
            ),
        )  # fmt: skip
        lines.append("")
    return "\n".join(lines)


__all__ = ["markdown", "scaling_markdown"]
