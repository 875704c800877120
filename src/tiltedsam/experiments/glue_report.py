"""The GLUE tables of ``tiltedsam glue`` (``report.md``) and the table across tasks; renders
only (selection: :func:`~tiltedsam.experiments.selection.select_glue`)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiltedsam._files import write_atomic
from tiltedsam.data.glue import TASKS
from tiltedsam.experiments.report import check_results, format_mean_std, load_results
from tiltedsam.experiments.selection import expand_grid, group_by_method, select_glue
from tiltedsam.optim import METHODS, parse_method

_METRIC_NAMES = {"accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman",
                 "matthews": "MCC"}  # fmt: skip


def _ms100(values: Sequence[float]) -> str:
    return format_mean_std([100 * v for v in values])


def _glue_settings(root: Path) -> dict[str, Any]:
    path = root / "glue.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{root} has no glue.json: not a directory written by tiltedsam glue"
        )
    return json.loads(path.read_text())


# What every GLUE run of a table must hold (a run without one is named, never left out).
GLUE_REQUIRED = ("method", "seed", "val_score", "dev", "wall_time", "steps", "closure_calls",
                 "history")  # fmt: skip


def glue_selection(
    root: str | Path, results: list[dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
    """(runs, {optimizer: selected label}, settings) of a ``tiltedsam glue`` directory: of
    ``results`` (a command's own runs) or of every run stored there, which must not mix
    settings; the runs of its grid only (the grid decides which labels are candidates)."""
    root = Path(root)
    settings = _glue_settings(root)
    order = [parse_method(spec).label for spec in expand_grid(settings["grid"])]
    results = [r for r in (load_results(root) if results is None else results)
               if r["method"] in order]  # fmt: skip
    if not results:
        raise FileNotFoundError(f"no finished runs under {root}/runs/")
    check_results(results, root, GLUE_REQUIRED)
    select_seeds = settings.get("select_seeds")
    pool = results if select_seeds is None else [r for r in results if r["seed"] in select_seeds]
    return results, select_glue(pool, order), settings


def _glue_rows(task_metrics: Sequence[str], groups, labels, erm_time: float) -> list[str]:
    rows = []
    for label in labels:
        runs = groups[label]
        dev = " | ".join(_ms100([r["dev"][m] for r in runs]) for m in task_metrics)
        wall = statistics.fmean(r["wall_time"] for r in runs)
        passes = runs[0]["closure_calls"] / runs[0]["steps"]
        ratio = f"{wall / erm_time:.1f}×" if not math.isnan(erm_time) else "–"
        rows.append(f"| {label} | {len(runs)} | {_ms100([r['val_score'] for r in runs])} | {dev} | "
                    f"{passes:g} | {wall:.0f} | {ratio} |")  # fmt: skip
    return rows


def write_glue_report(root: str | Path, results: list[dict[str, Any]] | None = None) -> str:
    """``report.md`` of a ``tiltedsam glue`` directory (of ``results``, a command's own runs,
    or of every run stored there): settings, the selected configuration of each optimizer over
    all seeds (GLUE metrics on dev, mean ± std), then every configuration."""
    root = Path(root)
    results, selected, settings = glue_selection(root, results)
    config = settings["config"]
    task = settings["task"]
    task_metrics = TASKS[task].metrics
    groups = group_by_method(results)
    select_seeds = settings.get("select_seeds")
    erm_label = selected.get("erm")
    erm_time = (statistics.fmean(r["wall_time"] for r in groups[erm_label])
                if erm_label else math.nan)  # fmt: skip
    names = " | ".join(f"dev {_METRIC_NAMES.get(m, m)}" for m in task_metrics)
    header = (f"| method | seeds | val score | {names} | passes/step | wall time (s) | time / ERM |\n"
              f"|---|---|---|{'---|' * len(task_metrics)}---|---|---|")  # fmt: skip
    examples = settings.get("examples", {})
    k = config["trainable_layers"]
    cache = f", {settings['cache_seconds']:.0f} s" if "cache_seconds" in settings else ""
    lr = f"{config['lr']:g}"
    if "shared_lr" in settings:
        lr = (f"{settings['shared_lr']:g} for the methods without their own lr (the lr of "
              f"`{settings['lr_from_erm']}`, selected on validation among the ERM runs)")  # fmt: skip
    lines = [
        f"# GLUE {task}",
        "",
        f"Encoder {settings.get('encoder', 'all-MiniLM-L6-v2')}, top {k} of {settings.get('encoder_layers', 6)} layers + linear head trained (frozen layers' "
        f"output cached once{cache}); "
        f"max length {config['max_length']}, batch {config['batch_size']} "
        f"({'length-grouped' if config.get('group_by_length', True) else 'random'}), "
        f"{config['epochs']} epoch(s), {config['base']} lr {lr} "
        f"({config['lr_schedule']}, warm-up {config['warmup']:g}), weight decay "
        f"{config['weight_decay']:g}; {examples.get('train', '?')} train / "
        f"{examples.get('val', '?')} validation (held out of GLUE train, split seed "
        f"{config['split_seed']}) / {examples.get('dev', '?')} dev examples.",
        "",
        "Val score: mean of the task's GLUE metrics on the validation part (×100); dev: GLUE "
        "metrics on the dev split (×100), mean ± std over seeds; wall time: training steps only, "
        "mean per run.",
        "",
    ]
    if selected:
        on = "all seeds" if select_seeds is None else f"seed(s) {', '.join(map(str, select_seeds))}"
        lines += [f"Selected per optimizer by mean validation score on {on} (dev never used "
                  "for selection); every seed of the selected configuration:", "", header]  # fmt: skip
        lines += _glue_rows(task_metrics, groups, list(selected.values()), erm_time)
        lines.append("")
    pool = results if select_seeds is None else [r for r in results if r["seed"] in select_seeds]
    seeds_text = (
        ""
        if select_seeds is None
        else f" on the selection seed(s) {', '.join(map(str, select_seeds))}"
    )
    lines += [f"All configurations{seeds_text} (what the selection saw):", "", header]
    order = [parse_method(spec).label for spec in expand_grid(settings["grid"])]
    pool_groups = group_by_method(pool)
    labels = sorted(pool_groups, key=lambda x: order.index(x) if x in order else len(order))
    lines += _glue_rows(task_metrics, pool_groups, labels, erm_time)
    total = sum(r["wall_time"] for r in results) / 60
    lines += ["", f"{len(results)} runs, {total:.1f} min of training steps in all (evaluation and "
              "the frozen-layer cache not included)."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    write_atomic(root / "report.md", text)
    return text


def glue_summary(roots: Sequence[str | Path]) -> str:
    """One table over tasks: the selected configuration of each optimizer per task, dev metrics
    mean ± std over its seeds, and the selected hyperparameters."""
    columns, cells, chosen = [], {}, {}
    for root in roots:
        results, selected, settings = glue_selection(root)
        task = settings["task"]
        groups = group_by_method(results)
        for name, label in selected.items():
            chosen.setdefault(name, []).append(f"{task}: `{label}` ({len(groups[label])} seeds)")
        for metric in TASKS[task].metrics:
            column = f"{task} {_METRIC_NAMES.get(metric, metric)}"
            columns.append(column)
            for name, label in selected.items():
                cells[(name, column)] = _ms100([r["dev"][metric] for r in groups[label]])
    names = [n for n in METHODS if n in chosen]  # in table order
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cells.get((name, c), "–") for c in columns) + " |")
    lines += ["", "Selected configurations:", ""]
    lines += [f"- {name}: " + "; ".join(chosen[name]) for name in names]
    return "\n".join(lines) + "\n"


__all__ = ["glue_selection", "glue_summary", "write_glue_report"]
