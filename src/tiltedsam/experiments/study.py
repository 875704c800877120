"""``tiltedsam study``: one regime, tuned with the same budget for every method, then seeds.

A study is what a generalization claim needs on one data set (issue #20):

1. **Equal-budget tuning on the selection seeds.**  Each method has a list of *stages*; a stage is
   a grid (``"lr=0.01/0.03/0.1"`` or ``"lr=0.01/0.1,weight_decay=0/5e-4"``) whose points are
   combined with the method's best configuration so far (its defaults before the first stage).
   After a stage the incumbent is the configuration with the best mean *final-epoch* validation
   accuracy over the selection seeds (ties keep the earlier one).  Points already run are not
   run again, so a method's budget is the number of distinct configurations it tried; the
   study refuses to start when the budgets differ (``equal_budget``).
2. **Two deliveries, selected on validation only** (labels as observed, noisy in noisy regimes):
   *final*, the configuration with the best final-epoch validation accuracy (the paper's
   protocol, a fixed number of epochs), and *early-stopped*, the configuration with the best
   validation accuracy at any epoch, reported at that epoch (what a practitioner does against
   label noise).  Both choose among the same tried configurations.
3. **Seeds.**  Each selected configuration runs on the report seeds.  The seed fixes the data
   (training subset, label noise, validation split), the initialisation and the data order, so
   runs of two methods with the same seed are paired.
4. **t-curve.**  TSAM's final selection is run at every tilt of ``tcurve`` on ``tcurve_seeds``.

Every run lives in ``OUT/runs/<method>/<key>-seed<k>/`` where ``key`` hashes the whole run
configuration (method, every option, seed, data settings, training settings), so runs with other
settings never overwrite each other; unfinished runs resume from their epoch checkpoint and
finished ones are read back.

**Several processes share one study.**  Run the same command in two terminals (or
``scripts/evidence.sh`` with ``WORKERS=2``): every run is claimed while it trains, each process
first takes the runs nobody holds (another method's tuning stage, another seed) and waits only
when all that is left is held by the other, so two processes finish in about half the wall
time.  The selection does not depend on who trained what: a stage's results are read in grid
order, so every process writes the same ``study.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tiltedsam import __version__
from tiltedsam._files import write_json
from tiltedsam.data.fingerprint import DataIdentity
from tiltedsam.data.mnist1d import ArrayDataset
from tiltedsam.experiments.configs import settings
from tiltedsam.experiments.selection import best_epoch, best_of, best_val, expand_grid, final_val
from tiltedsam.experiments.store import (
    RunConfig,
    canonical,
    claim_run,
    full_options,
    read_summary,
    run_key,
    run_or_load,
)
from tiltedsam.experiments.study_config import StudyConfig, load_study_config
from tiltedsam.experiments.train import check_method, read_metrics, train_run
from tiltedsam.optim import MethodSpec, parse_method

STUDY_FILE = "study.json"


@dataclass
class Study:
    """Runs a :class:`StudyConfig` into ``out`` (see the module doc); ``log`` gets one line a run."""

    config: StudyConfig
    out: Path
    log: Callable[[str], None] = print
    _data: dict[int, ArrayDataset] = field(default_factory=dict, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    poll_seconds: float = 15.0  # tuning: how often to look again when others hold every run
    _trained: int = field(default=0, repr=False)  # runs this process trained (not read back)

    # -- runs -------------------------------------------------------------------------------
    def full_options(self, method: str, options: dict[str, Any]) -> dict[str, Any]:
        """Every option a run is trained with (:func:`~tiltedsam.experiments.store.full_options`):
        two spellings of one training give one dict, hence one key."""
        return full_options(method, options, self.config.train.shared_options())

    def run_config(self, method: str, options: dict[str, Any], seed: int) -> dict[str, Any]:
        return self._run(method, options, seed).as_dict()

    def _run(self, method: str, options: dict[str, Any], seed: int) -> RunConfig:
        return RunConfig(method, self.full_options(method, options), seed,
                         self.config.data_settings(seed), settings(self.config.train))  # fmt: skip

    def run_dir(self, method: str, options: dict[str, Any], seed: int) -> Path:
        return self._run(method, options, seed).directory(self.out)

    def dataset(self, seed: int) -> ArrayDataset:
        if seed not in self._data:
            self._data.clear()  # one seed's data at a time: runs are ordered by seed
            self._data[seed] = self.config.data(seed).load(model=self.config.train.model)
        return self._data[seed]

    def identity(self) -> DataIdentity:
        """The data's identity (one for every seed: the seed only draws subset, noise, split)."""
        if "identity" not in self._cache:
            self._cache["identity"] = self.config.data(0).identity()
        return self._cache["identity"]

    def stored(self, method: str, options: dict[str, Any], seed: int) -> dict[str, Any] | None:
        """A finished run's result, or None (an unreadable summary is an error naming it).  For
        the report: the data identity was checked when the study ran (:meth:`run`), and the
        data need not be on the machine that renders it."""
        found = read_summary(
            self.run_dir(method, options, seed), self.run_config(method, options, seed)
        )
        return None if found is None else found["result"]

    def run(
        self, method: str, options: dict[str, Any], seed: int, *, wait: bool = True
    ) -> dict[str, Any] | None:
        """One run's result: read back if finished, else trained (resuming its checkpoint).  If
        another process is training it: None without ``wait``, else its result once done."""
        label = spec_label(method, options)

        def train(directory: Path) -> dict[str, Any]:
            self.log(f"{self.config.name}: {label} seed {seed}")
            self._trained += 1
            try:
                return train_run(MethodSpec(method, dict(options), label), self.dataset(seed),
                                 self.config.train, seed, progress=False,
                                 save_model=directory / "model.pt",
                                 checkpoint=directory / "checkpoint.pt",
                                 metrics=directory / "metrics.jsonl").to_dict()  # fmt: skip
            except FloatingPointError as err:
                # A configuration that diverges is a result of the tuning (its final model is
                # never selected), not a reason to stop the study.  The epochs it finished
                # before are kept: early stopping would have delivered the best of them.
                self.log(f"{self.config.name}: {label} seed {seed} diverged")
                return {"method": label, "seed": seed, "diverged": str(err),
                        "history": read_metrics(directory / "metrics.jsonl")}  # fmt: skip

        def waiting(directory: Path) -> None:
            self.log(f"{self.config.name}: {label} seed {seed}: waiting for another process")

        return run_or_load(self.out, self._run(method, options, seed), train, wait=wait,
                           on_wait=waiting, identity=self.identity)  # fmt: skip

    def run_all(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """The results of ``jobs`` in their order.  Runs held by another process are skipped
        on a first pass and waited for on a second, so processes sharing a study split the
        jobs instead of queueing behind each other."""
        first = [self.run(*job, wait=False) for job in jobs]
        return [self.run(*job) if r is None else r for job, r in zip(jobs, first, strict=True)]

    # -- the protocol -------------------------------------------------------------------------
    def stage_points(self, method: str, stage: str, incumbent: dict[str, Any]) -> list[dict]:
        points = []
        for spec in expand_grid([f"{method}:{stage}"]):
            points.append({**incumbent, **parse_method(spec).options})
        return points

    def check(self) -> None:
        """Every method option is valid and (with ``equal_budget``) every budget is the same;
        an error names the method and what is wrong, before anything trains."""
        budgets = {m: self.budget(m) for m in self.config.search}
        if self.config.equal_budget and len(set(budgets.values())) > 1:
            raise ValueError(
                f"study {self.config.name!r}: the methods' tuning budgets differ ({budgets}); "
                "give every method the same number of distinct configurations, or set "
                "equal_budget = false"
            )

    def budget(self, method: str) -> int:
        """Distinct configurations a method's stages try: every point of the first stage, and of
        each later stage every point but the incumbent itself (the point whose stage keys keep
        their defaults, already run).  A key may be tuned in one stage only, so this is exact
        before anything runs; a bad option fails here with the method's name."""
        stages = self.config.search[method]
        keys_seen: set[str] = set()
        total = 0
        for k, stage in enumerate(stages):
            points = self.stage_points(method, stage, {})
            keys = set().union(*(p.keys() for p in points))
            if keys & keys_seen:
                raise ValueError(
                    f"search.{method}: {sorted(keys & keys_seen)} tuned in more than one stage; "
                    "give each key one stage"
                )
            keys_seen |= keys
            defaults = self.full_options(method, {})
            for point in points:
                check_method(MethodSpec(method, point, f"{method}:{stage}"), self.config.train)
                incumbent = all(canonical(v) == defaults.get(key) for key, v in point.items())
                total += 0 if (k > 0 and incumbent) else 1
        return total

    def tune(
        self, on_tuned: Callable[[str, list], None] | None = None
    ) -> dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
        """Run every method's stages on the selection seeds; each method's tried
        (options, results), in stage and grid order (``on_tuned(method, tried)`` is told as
        each method finishes).

        The methods advance together: a pass gives each method's current stage every run
        nobody else holds, and a stage is done when all of its runs are.  A pass that neither
        finishes a stage nor trains a run means the rest is held by other processes: look
        again after ``poll_seconds`` (a stage another process completes meanwhile may open
        new runs, and the run of a process that died is free again)."""
        tuning = {m: _Tuning(m, stages) for m, stages in self.config.search.items()}
        waiting = False
        while not all(t.done for t in tuning.values()):
            advanced, held, trained = False, [], self._trained
            for state in tuning.values():
                while not state.done:
                    jobs = self.stage_jobs(state)
                    found = [self.run(*job, wait=False) for job in jobs]
                    if any(r is None for r in found):
                        held += [job for job, r in zip(jobs, found, strict=True) if r is None]
                        break
                    state.finish_stage(jobs, found, self.config.select_seeds)
                    advanced = True
                    if state.done and on_tuned is not None:
                        on_tuned(state.method, state.tried)
            if advanced or self._trained != trained:
                waiting = False
            elif held:
                if not waiting:  # once per wait, not once per look
                    names = ", ".join(f"{spec_label(m, o)} seed {s}" for m, o, s in held)
                    self.log(f"{self.config.name}: waiting for other processes ({names})")
                    waiting = True
                time.sleep(self.poll_seconds)
        return {m: t.tried for m, t in tuning.items()}

    def stage_jobs(self, state: _Tuning) -> list[Job]:
        """The runs of ``state``'s current stage not tried before (grid order, then seed)."""
        jobs: list[Job] = []
        stage = self.config.search[state.method][state.stage]
        for point in self.stage_points(state.method, stage, state.incumbent):
            full = self.full_options(state.method, point)
            if any(self.full_options(state.method, done) == full for done, _ in state.tried):
                continue
            if any(self.full_options(state.method, p) == full for _, p, _ in jobs):
                continue
            jobs += [(state.method, point, s) for s in self.config.select_seeds]
        return jobs

    def execute(self) -> dict[str, Any]:
        """The whole protocol; returns (and writes to ``study.json``) what was selected."""
        self.check()
        self.out.mkdir(parents=True, exist_ok=True)
        selection: dict[str, Any] = {}

        def select(method: str, tried: list) -> None:
            final = best_of(tried, final_val)[0]
            early = best_of(tried, best_val)[0]
            selection[method] = {"final": final, "early": early, "budget": len(tried),
                                 "tried": [p for p, _ in tried]}  # fmt: skip
            # what is selected so far, in the config's method order (the report shows it)
            ordered = {m: selection[m] for m in self.config.search if m in selection}
            write_json(self.out / STUDY_FILE, self.summary(ordered))

        self.tune(on_tuned=select)
        selection = {m: selection[m] for m in self.config.search}
        self.run_all(self.report_jobs(selection))
        self.analyze(selection)
        write_json(self.out / STUDY_FILE, self.summary(selection, done=True))
        return selection

    def report_jobs(self, selection: dict[str, Any]) -> list[Job]:
        """Every selection on every report seed (seed-major: one data set in memory at a
        time), then TSAM's final selection at every tilt of the t-curve."""
        jobs: list[Job] = []
        for seed in self.config.seeds:
            for method, chosen in selection.items():
                jobs += [(method, o, seed) for o in unique([chosen["final"], chosen["early"]])]
        if "tsam" in selection:
            base = selection["tsam"]["final"]
            for seed in self.config.tcurve_seeds or self.config.seeds:
                for t in self.config.tcurve:
                    # spelled as a grid value would be (5 not 5.0), so one training has one key
                    tilt = parse_method(f"tsam:tilt={t:g}").options["tilt"]
                    jobs.append(("tsam", {**base, "tilt": tilt}, seed))
        return jobs

    def analyze(self, selection: dict[str, Any]) -> None:
        """Flatness of each method's final selection on the flatness seeds (cached per run;
        a run another process is analysing is waited for last)."""
        from tiltedsam.experiments.study_analysis import analysis_settings, analyze_run, is_analyzed

        settings = analysis_settings(self.config.flatness)

        seeds = (
            self.config.seeds[:3]
            if self.config.flatness_seeds is None
            else self.config.flatness_seeds
        )
        held = []
        for wait in (False, True):
            for seed, method in held if wait else [(s, m) for s in seeds for m in selection]:
                directory = self.run_dir(method, selection[method]["final"], seed)
                if not (directory / "model.pt").exists() or is_analyzed(directory, settings):
                    continue
                claim = claim_run(directory, wait=wait)
                if claim is None:
                    held.append((seed, method))
                    continue
                with claim:
                    if not is_analyzed(directory, settings):  # done by another meanwhile?
                        self.log(f"{self.config.name}: flatness of {method} seed {seed}")
                        analyze_run(directory, self.config.train.model, self.dataset(seed),
                                    settings)  # fmt: skip

    def summary(self, selection: dict[str, Any], done: bool = False) -> dict[str, Any]:
        return canonical({"config": {**asdict(self.config), "train": asdict(self.config.train)},
                          "selection": selection, "finished": done, "version": __version__})  # fmt: skip


Job = tuple[str, dict[str, Any], int]  # (method, options, seed)


@dataclass
class _Tuning:
    """One method's progress through its stages: the incumbent and every (options, results)."""

    method: str
    stages: list[str]
    stage: int = 0
    incumbent: dict[str, Any] = field(default_factory=dict)
    tried: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.stage >= len(self.stages)

    def finish_stage(
        self, jobs: list[Job], results: list[dict[str, Any]], seeds: Sequence[int]
    ) -> None:
        """Record the stage's results (one per job, ``len(seeds)`` jobs per point, in order)
        and move on with the best final-epoch validation accuracy as the incumbent."""
        n = len(seeds)
        for k in range(0, len(jobs), n):
            self.tried.append((jobs[k][1], results[k : k + n]))
        self.incumbent = best_of(self.tried, final_val)[0]
        self.stage += 1


def unique(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if canonical(item) not in [canonical(o) for o in out]:
            out.append(item)
    return out


def spec_label(method: str, options: dict[str, Any]) -> str:
    """``tsam:lr=0.03,tilt=5`` (options in key order; defaults left out)."""
    if not options:
        return method
    text = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(options.items()))
    return f"{method}:{text}"


def _fmt(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "/".join(_fmt(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = [
    "Study",
    "StudyConfig",
    "best_epoch",
    "best_of",
    "best_val",
    "canonical",
    "final_val",
    "load_study_config",
    "run_key",
    "spec_label",
]
