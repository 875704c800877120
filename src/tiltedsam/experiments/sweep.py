"""``tiltedsam sweep``: a grid of method options × seeds, run in parallel processes, finished runs
skipped, hyperparameters selected on the validation split (never on test).

Grid syntax: ``METHOD:key=v1/v2/...,key2=w1/w2`` expands to the Cartesian product of the listed
values (``tsam:tilt=0/1/5/20/100,num_samples=3/5`` is 10 method specs;
:func:`~tiltedsam.experiments.selection.expand_grid`).  A method given without a grid runs once
with its defaults.

Runs go through the run store (:func:`~tiltedsam.experiments.store.run_or_load`): keyed by
their whole configuration, so sweeps with other settings into one directory keep each other's
runs, and claimed while they train.  A sweep that finds a run claimed by another goes on with
the rest and, at the end, waits for that run and reads its result, so two sweeps pointed at the
same directory never train one configuration twice and both end with every result and a
complete report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiltedsam._files import write_json
from tiltedsam._validation import check_int_at_least
from tiltedsam.data.fingerprint import DataIdentity
from tiltedsam.experiments.compare import run_config
from tiltedsam.experiments.configs import DataConfig, TrainConfig
from tiltedsam.experiments.report import sweep_settings, write_sweep_report
from tiltedsam.experiments.selection import expand_grid, select_on_validation
from tiltedsam.experiments.store import run_or_load
from tiltedsam.experiments.train import check_method, check_seeds, train_run
from tiltedsam.experiments.workers import worker_pool
from tiltedsam.optim import parse_method


def _run_one(job: dict[str, Any], wait: bool = False) -> dict[str, Any] | None:
    """Train one grid point × seed unless finished; None if another live process holds it."""
    spec, data, config = parse_method(job["spec"]), job["data"], job["config"]

    def train(directory: Path) -> dict[str, Any]:
        if job.get("threads"):
            import torch

            torch.set_num_threads(job["threads"])
        return train_run(spec, data.load(), config, job["seed"], progress=False,
                         save_model=directory / "model.pt",
                         checkpoint=directory / "checkpoint.pt",
                         metrics=directory / "metrics.jsonl").to_dict()  # fmt: skip

    run = run_config(spec, job["seed"], data.settings(), config)
    result = run_or_load(job["root"], run, train, wait=wait, identity=lambda: job["identity"])
    return None if result is None else {**result, "method": spec.label, "config": run.as_dict()}


def _run_waiting(job: dict[str, Any]) -> dict[str, Any] | None:
    return _run_one(job, wait=True)


def sweep(
    grid: Sequence[str],
    *,
    seeds: Sequence[int] = (0,),
    config: TrainConfig | None = None,
    dataset: str = "mnist1d",
    data_path: str | None = None,
    label_noise: float = 0.0,
    val_size: int | float = 500,
    train_subset: int | None = None,
    out: str | Path = "runs/sweep",
    workers: int = 1,
    select_seeds: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point × seed (``workers`` processes), then write the report.

    With ``select_seeds`` the sweep has two stages: every grid point runs on ``select_seeds`` only,
    the best configuration of each method is chosen on their mean validation accuracy, and only
    those run on ``seeds``.  The report then selects on ``select_seeds`` runs alone, so the extra
    seeds of the winners cannot change the choice.
    """
    if not val_size:
        raise ValueError("sweep selects hyperparameters on a validation split: give val_size > 0")
    check_int_at_least("workers", workers, 1)
    config = config or TrainConfig()
    seeds = check_seeds(seeds)
    if select_seeds is not None:
        select_seeds = check_seeds(select_seeds, "select_seeds")
    specs = expand_grid(grid)
    labels = [parse_method(spec).label for spec in specs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:  # each would count its runs twice in the report
        raise ValueError(f"grid points must be distinct, got {twice} more than once")
    for spec in specs:  # a bad option fails here, before any process starts
        check_method(parse_method(spec), config)
    root = Path(out)
    # The grid (merged with earlier sweeps into this directory) orders the report's ties.
    earlier = [s for s in sweep_settings(root).get("grid", []) if s not in specs]
    write_json(root / "sweep.json", {"grid": earlier + specs, "select_seeds":
                                     list(select_seeds) if select_seeds is not None else None})  # fmt: skip
    data = DataConfig(dataset=dataset, data_path=data_path, label_noise=label_noise,
                      train_subset=train_subset, val_size=val_size)  # fmt: skip
    jobs = _Jobs(root, data, config, workers, data.identity())
    if select_seeds is None:
        done = jobs.run(specs, seeds)
    else:
        done = jobs.run(specs, select_seeds)
        order = [parse_method(spec).label for spec in specs]
        winners = list(select_on_validation(done, order).values())
        done += jobs.run(winners, [s for s in seeds if s not in select_seeds])
    write_sweep_report(root, done)
    return done


class _Jobs:
    """Grid points × seeds into the run store, in ``workers`` processes."""

    def __init__(self, root: Path, data: DataConfig, config: TrainConfig, workers: int,
                 identity: DataIdentity) -> None:  # fmt: skip
        self.root, self.data, self.config, self.workers = root, data, config, workers
        self.identity = identity  # computed once here, checked against every stored run

    def run(self, specs: Sequence[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
        threads = max(1, (os.cpu_count() or 1) // self.workers) if self.workers > 1 else None
        jobs = [{"spec": spec, "seed": seed, "root": str(self.root), "data": self.data,
                 "config": self.config, "threads": threads, "identity": self.identity}
                for spec in specs for seed in seeds]  # fmt: skip
        if self.workers > 1:
            with worker_pool(self.workers) as pool:  # workers die with this process
                results = list(pool.map(_run_one, jobs))
                # Runs another sweep held: wait for them (or train them if it gave up).
                waiting = [job for job, r in zip(jobs, results, strict=True) if r is None]
                waited = iter(list(pool.map(_run_waiting, waiting)))
        else:
            results = [_run_one(job) for job in jobs]
            waited = (_run_waiting(job) for job, r in zip(jobs, results, strict=True) if r is None)
        return [r if r is not None else next(waited) for r in results]
