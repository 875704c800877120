"""``tiltedsam sweep --search tpe --trials N``: adaptive search (Optuna's TPE) over the grid's
spaces, through the same executors and the same run store as the grid.

Spaces.  Each grid entry is one space and one Optuna study (``optuna.journal`` next to the
results, study name = the entry).  An option listed with one value is fixed; a numeric option
with several values becomes the range from its smallest to its largest value: log-uniform when
all are positive (``lr=0.03/0.1/0.3``, ``rho=0.02/0.1``), log-uniform in ``1 + value`` when the
smallest is 0 (``tilt=0/5/20``: 0 stays reachable, and the scale is logarithmic above 1);
integers stay integers; anything else is a categorical choice among the listed values.

Trials are ordinary runs.  A sampled float is rounded to 3 significant digits and the point is
written as a method spec (``tsam:tilt=3.71,rho=0.0412,lr=0.118``), so the store keys it like a
grid point: a point asked again (by this search, a restarted one or a grid) reuses its runs.
A trial trains its spec on every selection seed; its value is their mean final validation
accuracy, the quantity selection uses.

Equal budget.  Every grid entry (method) gets the same ``N`` trials and the same pruner; a pruned
trial is a trial (it counts towards ``N``).  The median pruner compares the first selection
seed's validation accuracy after each epoch with the completed trials' at that epoch (from the
epoch ``n_warmup_steps`` = a quarter of the epochs on, after 4 completed trials); a pruned
trial's runs stop after that epoch's checkpoint and never enter selection or the report (their
partial accuracy is not comparable with a full budget).  Selection stays on validation only.

Restarts.  Trials left running by a killed driver are marked failed and their points asked
first again, so their runs resume from their checkpoints (no finished run is trained twice).
One driver per directory (``search.lock``); a second is refused with a clear error.  The study
name holds a hash of the settings the trials run with (data, training settings, seeds), so a
search with other settings into the same directory has its own trials.

Divergence.  A point whose run raises ``FloatingPointError`` (a non-finite loss under
``nonfinite="raise"``) is a failed trial that counts towards ``N`` (as a diverging grid point
counts in the grid's budget) and is never selected; the search goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tiltedsam._validation import check_choice, check_int_at_least
from tiltedsam.experiments.executors import Executor, Job
from tiltedsam.experiments.selection import _grid_values
from tiltedsam.optim import method_info
from tiltedsam.optim.specs import _parse_value

SAMPLERS = ("tpe",)
JOURNAL = "optuna.journal"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ImportError(
            "--search tpe needs Optuna: pip install 'tiltedsam[optuna]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def round3(value: float) -> float:
    """``value`` to 3 significant digits (0 stays 0)."""
    return 0.0 if value == 0 else float(f"{value:.3g}")


@dataclass(frozen=True)
class Dimension:
    """One option of a space: ``kind`` is ``fixed``, ``log``, ``log1p``, ``int`` or ``choice``."""

    key: str
    kind: str
    values: tuple[Any, ...]

    def suggest(self, trial: Any) -> Any:
        low, high = (min(self.values), max(self.values)) if self.kind != "choice" else (0, 0)
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "log":
            return round3(trial.suggest_float(self.key, low, high, log=True))
        if self.kind == "log1p":
            return round3(math.expm1(trial.suggest_float(f"log1p_{self.key}", 0.0,
                                                         math.log1p(high))))  # fmt: skip
        if self.kind == "int":
            return trial.suggest_int(self.key, low, high, log=low > 0)
        return trial.suggest_categorical(self.key, list(self.values))


def parse_space(entry: str) -> tuple[str, list[Dimension]]:
    """A grid entry (``tsam:tilt=0/5/20,lr=0.03/0.3``) as a method name and its dimensions."""
    name, _, rest = entry.partition(":")
    defaults = {"lr": 0.1, "weight_decay": 0.0, **_constructor_defaults(name.strip()),
                **method_info(name.strip()).defaults}  # fmt: skip
    dims = []
    for item in filter(None, rest.split(",")):
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"grid item {item!r} in {entry!r} must look like key=v1/v2")
        raw = _grid_values(text, entry)
        values = tuple(_parse_value(v) for v in raw)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if len(set(raw)) == 1:
            kind = "fixed"
        elif (
            numeric
            and all(isinstance(v, int) for v in values)
            and _is_int_option(defaults.get(key.strip()))
        ):  # an int option (num_samples); tilt=0/5/20 is a float option written as ints
            kind = "int"
        elif numeric and min(values) > 0:
            kind = "log"
        elif numeric and min(values) == 0:
            kind = "log1p"
        else:
            kind = "choice"
            values = tuple(raw)
        dims.append(Dimension(key.strip(), kind, values))
    return name.strip(), dims


def _constructor_defaults(name: str) -> dict[str, Any]:
    """The keyword defaults of the method's optimizer class (an option's type, where the
    registry's harness defaults do not list it: ``delta``, ``noise_radius``)."""
    import inspect

    cls = method_info(name).cls
    if cls is None:
        return {}
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _is_int_option(default: Any) -> bool:
    """An option is an int only if its default is one (an unknown option is a float)."""
    return isinstance(default, int) and not isinstance(default, bool)


def point_spec(name: str, dims: Sequence[Dimension], trial: Any) -> str:
    """The method spec of the point ``trial`` samples (rounded floats, the entry's key order)."""
    parts = [f"{d.key}={_text(d.suggest(trial))}" for d in dims]
    return name + (":" + ",".join(parts) if parts else "")


def _text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _storage(path: str) -> Any:
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))


@dataclass(frozen=True)
class PruneHook:
    """A run's ``on_epoch`` hook (picklable: it runs in the executor's process): reports the
    epoch's validation accuracy to trial ``number`` of ``study`` (``report``: the first
    selection seed's run only) and asks the median pruner whether to stop the trial."""

    journal: str
    study: str
    number: int
    report: bool
    warmup: int

    def __call__(self, record: dict[str, Any]) -> bool:
        optuna = _optuna()
        storage = _storage(self.journal)
        study = optuna.load_study(study_name=self.study, storage=storage,
                                  pruner=median_pruner(self.warmup))  # fmt: skip
        study_id = storage.get_study_id_from_name(self.study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        trial = optuna.trial.Trial(study, trial_id)
        if self.report and record.get("val_accuracy") is not None:
            trial.report(record["val_accuracy"], int(record["epoch"]))
        return trial.should_prune()


def median_pruner(warmup: int) -> Any:
    """Prune below the median of the completed trials, after 4 of them, from epoch ``warmup``."""
    return _optuna().pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=warmup)


def search_grid(
    entries: Sequence[str],
    seeds: Sequence[int],
    *,
    trials: int | None,
    epochs: int,
    root: str | Path,
    executor: Executor,
    make: Callable[[Sequence[str], Sequence[int]], list[Job]],
    sampler: str = "tpe",
    sampler_seed: int = 0,
    log: Callable[[str], None] = lambda line: None,
    settings: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """``trials`` trials of every grid entry (module doc); returns the finished runs of the
    completed trials (each run once) and the specs they trained, in the order asked.

    ``settings`` (the data, training settings and seeds the trials run with) name the studies
    together with the entry, so a search with other settings into the same directory starts
    its own trials instead of counting another's."""
    check_search(sampler, trials)
    for entry in entries:
        _, dims = parse_space(entry)
        if all(d.kind == "fixed" for d in dims):
            raise ValueError(
                f"--search {sampler}: grid entry {entry!r} has one value per option, nothing to "
                "search (give an option two or more values, e.g. rho=0.02/0.2, or use the grid)"
            )
    optuna = _optuna()
    Path(root).mkdir(parents=True, exist_ok=True)
    with _driver_lock(Path(root)):
        return _search(entries, seeds, trials, epochs, str(Path(root) / JOURNAL), executor, make,
                       sampler_seed, log, _settings_tag(settings), optuna)  # fmt: skip


def _settings_tag(settings: dict[str, Any] | None) -> str:
    if settings is None:
        return ""
    import hashlib
    import json

    text = json.dumps(settings, sort_keys=True, default=str)
    return " @" + hashlib.sha256(text.encode()).hexdigest()[:12]


class _driver_lock:
    """One search driver per results directory (a second one would fail the first's trials as
    orphans): an exclusive ``flock`` on ``search.lock``, held for the whole search."""

    def __init__(self, root: Path) -> None:
        self.path = root / "search.lock"

    def __enter__(self) -> None:
        import fcntl

        self.file = open(self.path, "a+")  # held until __exit__
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise ValueError(
                f"another --search driver is running on {self.path.parent} (it holds "
                f"{self.path}); wait for it, or give this search another --out"
            ) from None

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # releases the lock


def _search(entries, seeds, trials, epochs, journal, executor, make, sampler_seed, log, tag,
            optuna) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    storage = _storage(journal)
    warmup = max(1, epochs // 4)
    specs: list[str] = []
    for entry in entries:
        name, dims = parse_space(entry)
        study_name = entry + tag
        study = optuna.create_study(
            study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=sampler_seed,
                                               n_startup_trials=max(2, min(10, trials // 3))),
            pruner=median_pruner(warmup),
        )  # fmt: skip
        _recover(study, optuna)
        while (told := _told(study, optuna)) < trials:
            batch = [study.ask() for _ in range(min(executor.slots, trials - told))]
            points = [point_spec(name, dims, t) for t in batch]
            first = {}  # each point once per round: a repeated point shares its runs
            for trial, spec in zip(batch, points, strict=True):
                trial.set_user_attr("spec", spec)
                first.setdefault(spec, trial)
            jobs = [replace(job, hook=PruneHook(journal, study_name, first[job.spec].number,
                                                job.seed == seeds[0], warmup),
                            keep_going=True)
                    for job in make(list(first), seeds)]  # fmt: skip
            results = dict(zip(((j.spec, j.seed) for j in jobs), executor.run(jobs), strict=True))
            for trial, spec in zip(batch, points, strict=True):
                mine = [results[spec, seed] for seed in seeds]
                failed = [r["failed"] for r in mine if r.get("failed")]
                if failed:  # diverged: a tried configuration (it counts), never selected
                    trial.set_user_attr("diverged", failed[0])
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log(f"{entry} trial {trial.number}: {spec} diverged ({failed[0]})")
                    continue
                if any(r.get("stopped") for r in mine):
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    log(f"{entry} trial {trial.number}: {spec} pruned")
                    continue
                value = sum(r["val_accuracy"] for r in mine) / len(mine)
                study.tell(trial, value)
                log(f"{entry} trial {trial.number}: {spec} val acc {value:.4f}")
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        for trial in sorted(complete, key=lambda t: t.number):  # this driver's and earlier ones'
            if trial.user_attrs["spec"] not in specs:
                specs.append(trial.user_attrs["spec"])
    if not specs:
        raise ValueError(
            f"--search: no trial of {', '.join(entries)} completed (each diverged or was "
            "pruned; the journal keeps them): nothing to select.  Narrow the ranges (a lower lr)"
        )
    # The completed trials' runs, read back from the store (none trains: all are finished).
    return executor.run(make(specs, seeds)), specs


def check_search(sampler: str, trials: int | None) -> None:
    """A known sampler, ``trials`` >= 1, and Optuna installed (before any run starts)."""
    check_choice("search", sampler, SAMPLERS)
    if trials is None:
        raise ValueError("--search tpe needs --trials N (trials per grid entry, N >= 1)")
    check_int_at_least("trials", trials, 1)
    _optuna()


def _told(study: Any, optuna: Any) -> int:
    """Trials that count towards the budget: completed, pruned and diverged ones (a grid point
    that diverges counts in a grid's budget too); not those a killed driver left behind."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    counted = len(study.get_trials(deepcopy=False, states=states))
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    return counted + sum(1 for t in failed if "diverged" in t.user_attrs)


def _recover(study: Any, optuna: Any) -> None:
    """Trials a killed driver left running: failed, and their points asked again first (the
    driver lock makes sure no live driver still owns them)."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, skip_if_exists=False)


__all__ = ["SAMPLERS", "PruneHook", "parse_space", "point_spec", "round3", "search_grid"]
