"""The evidence page's tables across studies: one row per study of test accuracies with the
paired differences (:func:`summary_row`), of flatness against accuracy (:func:`flatness_row`),
and of what each method's training cost (:func:`cost_row`)."""

from __future__ import annotations

import statistics

from tiltedsam.experiments.stats import paired_difference, spearman
from tiltedsam.experiments.study_figures import early_test, final_test
from tiltedsam.experiments.study_report import NAMES, StudyView, _ms


def _regime(view: StudyView, link: str, *marks: str) -> str:
    """The first cell of every row: the regime's name linked to its section, with
    ``(still running, ...)`` for a study that has not finished and any other ``marks``."""
    marks = (() if view.finished else ("still running",)) + marks
    return f"[{view.config.name}]({link})" + (f" ({', '.join(marks)})" if marks else "")


def summary_row(view: StudyView, link: str) -> str:
    """``| regime | ERM final | ERM early | SAM ... | TSAM − ERM early vs early |``."""
    cells = [_regime(view, link)]
    n = len(view.config.seeds)
    for m in ("erm", "sam", "tsam"):
        for runs, metric in ((view.final, final_test), (view.early, early_test)):
            values = [metric(r) for r in runs.get(m, {}).values()]
            cells.append(_ms(values, of=n) if values else "–")
    comparisons = (
        (view.early.get("tsam", {}), view.early.get("erm", {}), early_test, early_test),
        (view.final.get("tsam", {}), view.early.get("erm", {}), final_test, early_test),
        (view.final.get("tsam", {}), view.final.get("sam", {}), final_test, final_test),
    )
    for ra, rb, fa, fb in comparisons:
        seeds = sorted(set(ra) & set(rb))
        if len(seeds) >= 2:
            d = paired_difference([fa(ra[s]) for s in seeds], [fb(rb[s]) for s in seeds])
            marks = ([] if d.significant else ["n.s."]) + ([f"n = {d.n}"] if d.n < n else [])
            mark = f" ({', '.join(marks)})" if marks else ""
            cells.append(f"{100 * d.mean:+.2f} {d.interval()}{mark}")
        else:
            cells.append("–")
    return "| " + " | ".join(cells) + " |"


def flatness_accuracy(view: StudyView) -> list[tuple[str, int, float, float, float]]:
    """``(method, seed, λ1, tr H, final test accuracy)`` of every analysed final solution."""
    return [
        (m, seed, float(flat["lambda1"]), float(flat["trace"]), final_test(view.final[m][seed]))
        for m, runs in view.flatness.items()
        for seed, flat in sorted(runs.items())
        if seed in view.final.get(m, {})
    ]


def flatness_row(view: StudyView, link: str) -> str | None:
    """``| regime | n | λ1 per method | test acc per method | ρ(λ1, acc) | ρ(tr H, acc) |
    methods by mean λ1 | methods by mean accuracy |``; None without three analysed solutions.

    ρ is Spearman's rank correlation over the analysed solutions (methods × seeds pooled), with
    its two-sided p-value (exact for up to 9 solutions, :func:`~tiltedsam.experiments.stats.
    spearman`): negative means the flatter solutions are the more accurate.  A method without
    analysed solutions is "–" in the per-method cells."""
    points = flatness_accuracy(view)
    if len(points) < 3:
        return None
    methods = [m for m in ("erm", "sam", "tsam") if any(p[0] == m for p in points)]

    def mean(m: str, k: int) -> float:
        return statistics.fmean(p[k] for p in points if p[0] == m)

    def per_method(k: int, fmt) -> str:
        return " / ".join(fmt(mean(m, k)) if m in methods else "–" for m in ("erm", "sam", "tsam"))

    def rho(k: int) -> str:
        found = spearman([p[k] for p in points], [p[4] for p in points])
        if found is None:
            return "–"
        r, pvalue = found
        return f"{r:+.2f} (p = {pvalue:.3g}{'' if pvalue < 0.05 else ', n.s.'})"

    cells = [
        _regime(view, link),
        str(len(points)),
        per_method(2, lambda v: f"{v:.3g}"),
        per_method(4, lambda v: f"{100 * v:.2f}"),
        rho(2),
        rho(3),
        " < ".join(NAMES[m] for m in sorted(methods, key=lambda m: mean(m, 2))),
        " > ".join(NAMES[m] for m in sorted(methods, key=lambda m: -mean(m, 4))),
    ]
    return "| " + " | ".join(cells) + " |"


FLATNESS_HEADER = [
    "| regime | solutions | λ1: ERM / SAM / TSAM | test acc (%): ERM / SAM / TSAM | "
    "Spearman ρ(λ1, test acc) | Spearman ρ(tr H, test acc) | flattest first (mean λ1) | "
    "most accurate first |",
    "|---|---|---|---|---|---|---|---|",
]


SUMMARY_HEADER = [
    "| regime | ERM final | ERM early-stopped | SAM final | SAM early-stopped | TSAM final | "
    "TSAM early-stopped | TSAM − ERM, both early-stopped | TSAM final − ERM early-stopped | "
    "TSAM − SAM, final |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def _costed(run: dict) -> bool:
    """The run recorded what it cost on a CPU (a GPU run's CPU time says nothing)."""
    return (run.get("device", "cpu") == "cpu" and bool(run.get("cpu_time"))
            and bool(run.get("steps")) and run.get("closure_calls") is not None)  # fmt: skip


def cost_row(view: StudyView, link: str) -> str | None:
    """``| regime | passes per step: ERM / SAM / TSAM | CPU-s per run: ERM / SAM / TSAM |
    TSAM ÷ ERM | TSAM ÷ SAM |`` over the final selections' runs on the report seeds that every
    method ran on a CPU with its cost recorded (``n = k`` when fewer than the report seeds);
    None without such a seed.

    A pass is one forward-backward of a batch (``closure_calls / steps``: hardware-free);
    CPU seconds are the process CPU time of a run (the studies run single-threaded,
    ``--threads 1``, where a second process on another core barely moves it).  The ratios
    divide the mean CPU seconds."""
    methods = ("erm", "sam", "tsam")
    costed = {m: {s for s, r in view.final.get(m, {}).items() if _costed(r)} for m in methods}
    seeds = sorted(set.intersection(*costed.values()))
    if not seeds:
        return None
    passes, seconds = [], []
    for m in methods:
        runs = [view.final[m][s] for s in seeds]
        passes.append(statistics.fmean(r["closure_calls"] / r["steps"] for r in runs))
        seconds.append(statistics.fmean(r["cpu_time"] for r in runs))
    fewer = (f"n = {len(seeds)}",) if len(seeds) < len(view.config.seeds) else ()
    return (f"| {_regime(view, link, *fewer)} | {' / '.join(f'{p:.3g}' for p in passes)} | "
            f"{' / '.join(f'{c:.3g}' for c in seconds)} | {seconds[2] / seconds[0]:.1f}× | "
            f"{seconds[2] / seconds[1]:.1f}× |")  # fmt: skip


COST_HEADER = [
    "| regime | passes per step: ERM / SAM / TSAM | CPU-s per run: ERM / SAM / TSAM | "
    "TSAM ÷ ERM | TSAM ÷ SAM |",
    "|---|---|---|---|---|",
]
