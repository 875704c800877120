"""Tables and figures of a study (``tiltedsam study``), from its stored runs only.

:func:`read_study` gathers what a study directory holds (the runs of each method's selected
configurations on the report seeds, the t-curve, the tuning, the flatness); :func:`study_section`
renders it as Markdown with two figures (the tables across studies are
:mod:`~tiltedsam.experiments.study_summary`'s).  A study that is still running renders what has
finished.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiltedsam.experiments.configs import TrainConfig
from tiltedsam.experiments.stats import mean_interval, paired_difference
from tiltedsam.experiments.study import (
    STUDY_FILE,
    Study,
    StudyConfig,
    best_epoch,
    best_val,
    final_val,
    spec_label,
)
from tiltedsam.experiments.study_analysis import analysis_settings, stored_analysis
from tiltedsam.experiments.study_figures import (
    early_test,
    final_test,
    plot_curves,
    plot_tcurve,
    tcurve_points,
)
from tiltedsam.optim import BASE_OPTIMIZERS, parse_method

NAMES = {"erm": "ERM", "sam": "SAM", "tsam": "TSAM"}


@dataclass
class StudyView:
    """A study's stored results: ``final[m][seed]`` / ``early[m][seed]`` are the runs of method
    m's two selections on the report seeds, ``tcurve[t][seed]`` TSAM's tilts, ``tuning[m]``
    every tried (options, results on the selection seeds); ``diverged`` the (method, what,
    seed) of the report runs that diverged, left out of the means and named in the section;
    ``stopped_before_divergence`` the (method, seed) whose early-stopped result is the best
    epoch before the divergence."""

    config: StudyConfig
    selection: dict[str, Any]
    finished: bool
    final: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    early: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    tcurve: dict[float, dict[int, dict[str, Any]]] = field(default_factory=dict)
    tuning: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = field(
        default_factory=dict
    )
    flatness: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    diverged: list[tuple[str, str, int]] = field(default_factory=list)
    stopped_before_divergence: list[tuple[str, int]] = field(default_factory=list)


def config_from_summary(stored: dict[str, Any]) -> StudyConfig:
    values = dict(stored)
    train = TrainConfig(**values.pop("train"))
    for key in ("select_seeds", "seeds", "tcurve", "tcurve_seeds", "flatness_seeds"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    return StudyConfig(train=train, **values)


def read_study(out: str | Path) -> StudyView:
    """Everything stored under ``out`` for the study whose ``study.json`` is there."""
    out = Path(out)
    stored = json.loads((out / STUDY_FILE).read_text())
    config = config_from_summary(stored["config"])
    study = Study(config, out, log=lambda line: None)
    view = StudyView(config, stored["selection"], bool(stored.get("finished")))

    def loader(what: str):
        def load(method: str, options: dict[str, Any], seed: int) -> dict[str, Any] | None:
            result = study.stored(method, options, seed)
            if result is not None and result.get("diverged"):
                if what == "early-stopped" and result.get("history"):
                    view.stopped_before_divergence.append((method, seed))
                    return result  # early stopping delivers its best epoch before it diverged
                view.diverged.append((method, what, seed))
                return None
            return result

        return load

    settings = analysis_settings(config.flatness)
    for method, chosen in view.selection.items():
        view.final[method] = _by_seed(loader("final"), method, chosen["final"], config.seeds)
        view.early[method] = _by_seed(loader("early-stopped"), method, chosen["early"],
                                      config.seeds)  # fmt: skip
        view.tuning[method] = [
            (options, [study.stored(method, options, s) for s in config.select_seeds])
            for options in chosen["tried"]
        ]
        flat_seeds = config.seeds[:3] if config.flatness_seeds is None else config.flatness_seeds
        view.flatness[method] = {}
        for seed in flat_seeds:  # only what was measured with the study's settings
            found = stored_analysis(study.run_dir(method, chosen["final"], seed), settings)
            if found is not None:
                view.flatness[method][seed] = found
    if "tsam" in view.selection:
        base = view.selection["tsam"]["final"]
        for t in config.tcurve:
            tilt = parse_method(f"tsam:tilt={t:g}").options["tilt"]
            seeds = config.tcurve_seeds or config.seeds
            view.tcurve[t] = _by_seed(loader(f"t = {t:g}"), "tsam", {**base, "tilt": tilt}, seeds)
    return view


def _by_seed(load, method, options, seeds) -> dict[int, dict[str, Any]]:
    out = {}
    for seed in seeds:
        result = load(method, options, seed)
        if result is not None:
            out[seed] = result
    return out


# -- numbers of a run ---------------------------------------------------------------------------
def _ms(values: Sequence[float], scale: float = 100.0, digits: int = 2, of: int = 0) -> str:
    """``mean ± sample std``; ``(n = k)`` when there are fewer values than ``of`` (the report
    seeds), so a cell over part of the seeds never reads as one over all of them."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f} (n = 1)"
    mean, std = statistics.fmean(values), statistics.stdev(values)
    n = f" (n = {len(values)})" if len(values) < of else ""
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}{n}"


def _optimizer(train: TrainConfig) -> str:
    """``SGD momentum 0.9`` or the base optimizer's name (``AdamW``)."""
    name = BASE_OPTIMIZERS[train.base].__name__ if train.base in BASE_OPTIMIZERS else train.base
    return f"{name} momentum {train.momentum:g}" if train.base == "sgd" else name


def _label(method: str, options: dict[str, Any]) -> str:
    return spec_label(method, options).replace(f"{method}:", "").replace(",", ", ") or "defaults"


# -- rendering ----------------------------------------------------------------------------------
def study_section(view: StudyView, img_dir: Path, stem: str, img_link: str = "img") -> str:
    """The Markdown of one study, with ``<stem>-curves.png`` and ``<stem>-tcurve.png`` written
    to ``img_dir`` (linked as ``img_link/...``)."""
    c = view.config
    t = c.train
    methods = list(view.selection)
    seeds_text = ", ".join(map(str, c.seeds))
    n = len(c.seeds)
    test_set = (
        "the GLUE dev set as the test set" if c.dataset.startswith("glue:") else "the full test set"
    )
    lines = [
        f"Data: {c.dataset}, {c.train_subset or 'all'} examples drawn per seed, of which "
        f"{c.val_size} are the validation split (labels as observed), {c.label_noise:.0%} "
        f"symmetric label noise on the training and validation labels; {test_set}.  "
        f"Model `{t.model}`, {t.epochs} epochs, batch {t.batch_size}, {_optimizer(t)}, "
        f"{t.lr_schedule} lr.  Tuning budget: "
        + ", ".join(f"{NAMES.get(m, m)} {view.selection[m]['budget']}" for m in methods)
        + f" configurations on seed(s) {', '.join(map(str, c.select_seeds))}; every number "
        f"below is on the report seeds {seeds_text} (mean ± std).",
        "",
    ]
    if not view.finished:
        lines += ["*This study is still running: the tables show the runs finished so far.*", ""]
    lines += [
        "| method | selected (final model) | final test acc (%) | train acc (%), given / clean labels "
        "| selected (early stopping) | best-val-epoch test acc (%) | stopping epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        finals, earlies = list(view.final[m].values()), list(view.early[m].values())
        train = _ms([r["train_accuracy"] for r in finals], digits=1, of=n)
        clean = [
            r["train_accuracy_clean"] for r in finals if r.get("train_accuracy_clean") is not None
        ]
        # without noise the clean labels are the given ones (and runs stored before the loader
        # kept them aligned with a training subset hold a wrong value): shown only with noise
        train += f" / {_ms(clean, digits=1, of=n)}" if clean and c.label_noise else ""
        epochs = [best_epoch(r)["epoch"] for r in earlies]
        stop = f"{statistics.fmean(epochs):.0f}" if epochs else "–"
        lines.append(
            f"| {NAMES.get(m, m)} | {_label(m, view.selection[m]['final'])} | "
            f"{_ms([final_test(r) for r in finals], of=n)} | {train} | "
            f"{_label(m, view.selection[m]['early'])} | "
            f"{_ms([early_test(r) for r in earlies], of=n)} | "
            f"{stop} |"
        )
    if view.diverged:
        lines += [
            "",
            "Diverged, left out of the means and differences: "
            + "; ".join(f"{NAMES.get(m, m)} {what} seed {seed}" for m, what, seed in view.diverged)
            + ".",
        ]
    if view.stopped_before_divergence:
        lines += [
            "",
            "Diverged later, early-stopped at their best epoch before (in the early-stopping "
            "means): " + "; ".join(f"{NAMES.get(m, m)} seed {seed}"
                                   for m, seed in view.stopped_before_divergence) + ".",
        ]  # fmt: skip
    lines += ["", *paired_table(view), ""]
    curves = img_dir / f"{stem}-curves.png"
    if plot_curves(view, curves):
        lines += [f"![Training loss and test accuracy per epoch]({img_link}/{curves.name})", ""]
    tcurve = tcurve_table(view)
    if tcurve:
        lines += tcurve
        path = img_dir / f"{stem}-tcurve.png"
        if plot_tcurve(view, path):
            lines += ["", f"![Test accuracy against t]({img_link}/{path.name})"]
        lines.append("")
    if any(view.flatness.values()):
        lines += [*flatness_table(view), ""]
    lines += tuning_table(view)
    return "\n".join(lines) + "\n"


COMPARISONS = (("tsam", "erm"), ("tsam", "sam"), ("sam", "erm"))


def paired_table(view: StudyView) -> list[str]:
    """Paired differences over the report seeds, per delivery, and TSAM's final model against
    early-stopped ERM (the practitioner's baseline)."""
    rows = ["| comparison (paired over seeds) | difference in test acc, 95% CI |", "|---|---|"]

    def add(text: str, a: dict[int, Any], b: dict[int, Any], fa, fb) -> None:
        seeds = sorted(set(a) & set(b))
        if not seeds:
            return
        diff = paired_difference([fa(a[s]) for s in seeds], [fb(b[s]) for s in seeds])
        rows.append(f"| {text} (n = {diff.n}) | {diff.describe()} |")

    for delivery, runs, metric in (("final", view.final, final_test),
                                   ("early-stopped", view.early, early_test)):  # fmt: skip
        for a, b in COMPARISONS:
            if a in runs and b in runs:
                add(f"{NAMES[a]} − {NAMES[b]}, {delivery}", runs[a], runs[b], metric, metric)
    if "tsam" in view.final and "erm" in view.early:
        add("TSAM final − ERM early-stopped", view.final["tsam"], view.early["erm"],
            final_test, early_test)  # fmt: skip
    return rows if len(rows) > 2 else []


def tcurve_table(view: StudyView) -> list[str]:
    """TSAM's tilts on the seeds every tilt has finished (:func:`tcurve_points`); [] if none."""
    seeds, points = tcurve_points(view)
    if not points:
        return []
    base = _label("tsam", {k: v for k, v in view.selection["tsam"]["final"].items() if k != "tilt"})
    rows = [
        f"TSAM at its selected configuration ({base}) for every tilt t, on seeds "
        f"{', '.join(map(str, seeds))} (those every tilt has finished); mean ± 95% CI half-width.",
        "",
        "| t | seeds | final test acc (%) | best-val-epoch test acc (%) | final val acc (%, labels as observed) |",
        "|---|---|---|---|---|",
    ]
    for t, results in points:
        cells = []
        for metric in (final_test, early_test, final_val):
            mean, half = mean_interval([metric(r) for r in results])
            cells.append(f"{100 * mean:.2f}" + (f" ± {100 * half:.2f}" if len(results) > 1 else ""))
        rows.append(f"| {t:g} | {len(results)} | " + " | ".join(cells) + " |")
    return rows


def _subset_words(settings: dict[str, Any]) -> str:
    if settings.get("subset_draw", "first") == "first":
        return f"first {settings['subset']} training examples"
    return f"{settings['subset']} training examples drawn at random (seed {settings['seed']})"


def flatness_table(view: StudyView) -> list[str]:
    any_run = next(r for runs in view.flatness.values() for r in runs.values())
    s = any_run["settings"]
    delta = f"{max(s['deltas']):g}"
    tilt = f"TSAM t={max(s['tilts']):g}"
    rows = [
        f"Flatness of the final selections (seeds {', '.join(map(str, next(iter(view.flatness.values()))))}; "
        f"{_subset_words(s)}, labels as trained on): λ1 by Lanczos, tr H by "
        f"Hutchinson ({s['probes']} probes), E L(θ+ε) for ε ~ N(0, {delta}² I) ({s['draws']} draws), "
        f"and the cross-evaluation losses of paper Table 3 (SAM: ρ = {s['rho']:g}; TSAM: uniform "
        f"ball of radius {s['tsam_radius']:g}).",
        "",
        f"| method | L(θ) | λ1 | tr H | E L(θ+ε), δ = {delta} | SAM loss | {tilt} loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, runs in view.flatness.items():
        rs = list(runs.values())
        if not rs:
            continue

        def col(get, digits: int = 3, rs=rs) -> str:
            values = [get(r) for r in rs]
            if len(values) == 1:
                return f"{values[0]:.{digits}g}"
            return f"{statistics.fmean(values):.{digits}g} ± {statistics.stdev(values):.2g}"

        rows.append(
            f"| {NAMES.get(m, m)} | {col(lambda r: r['loss'])} | {col(lambda r: r['lambda1'])} | "
            f"{col(lambda r: r['trace'])} | {col(lambda r: r['noise'][delta]['mean'])} | "
            f"{col(lambda r: r['cross']['SAM'])} | {col(lambda r: r['cross'][tilt])} |"
        )
    return rows


def tuning_table(view: StudyView) -> list[str]:
    rows = [
        "<details><summary>Every configuration tried (validation accuracy on the selection "
        "seeds)</summary>",
        "",
        "| method | configuration | final val acc (%) | best val acc (%) | selected |",
        "|---|---|---|---|---|",
    ]
    for m, tried in view.tuning.items():
        for options, results in tried:
            done = [r for r in results if r is not None]
            if not done:
                continue
            marks = [name for name in ("final", "early") if view.selection[m][name] == options]
            diverged = any(r.get("diverged") for r in done)
            fv = (
                "diverged"
                if diverged
                else f"{100 * statistics.fmean(final_val(r) for r in done):.2f}"
            )
            stopped = all(r.get("history") for r in done)  # every seed has an epoch to stop at
            bv = f"{100 * statistics.fmean(best_val(r) for r in done):.2f}" if stopped else "–"
            rows.append(f"| {NAMES.get(m, m)} | {_label(m, options)} | {fv} | {bv} | "
                        f"{', '.join(marks)} |")  # fmt: skip
    rows += ["", "</details>"]
    return rows
