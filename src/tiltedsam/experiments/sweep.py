"""``tiltedsam sweep``: a grid of method options × seeds, run in parallel processes, finished runs
skipped, hyperparameters selected on the validation split (never on test).

Grid syntax: ``METHOD:key=v1/v2/...,key2=w1/w2`` expands to the Cartesian product of the listed
values (``tsam:tilt=0/1/5/20/100,num_samples=3/5`` is 10 method specs).  A method given without a
grid runs once with its defaults.

Concurrency: each run directory is claimed (:func:`claim_run`, an ``flock`` on its ``claim``
file) before training, and checked again for a finished result once claimed, so two sweeps
pointed at the same directory never train the same configuration twice; a claim dies with its
process (even on SIGKILL).  A sweep that finds a run claimed by another goes on with the rest
and, at the end, waits for that run and reads its result, so both sweeps end with every result
and a complete report.  Every file is written through a temporary file and a rename.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tiltedsam._validation import check_int_at_least
from tiltedsam.data import load_dataset
from tiltedsam.experiments.checkpoint import remove_checkpoints
from tiltedsam.experiments.store import (
    claim_run,
    clear_run,
    load_finished,
    run_dir,
    write_json_atomic,
)
from tiltedsam.experiments.train import TrainConfig, check_method, check_seeds, train_run
from tiltedsam.optim import parse_method


def expand_grid(entries: Sequence[str]) -> list[str]:
    """``["erm", "tsam:tilt=1/5"]`` → ``["erm", "tsam:tilt=1", "tsam:tilt=5"]``."""
    specs: list[str] = []
    for entry in entries:
        name, _, rest = entry.partition(":")
        if not rest:
            specs.append(name)
            continue
        keys, choices = [], []
        for item in filter(None, rest.split(",")):
            key, sep, values = item.partition("=")
            if not sep:
                raise ValueError(f"grid item {item!r} in {entry!r} must look like key=v1/v2")
            keys.append(key.strip())
            choices.append([v.strip() for v in values.split("/") if v.strip()])
        for combo in itertools.product(*choices):
            specs.append(
                name + ":" + ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
            )
    for spec in specs:
        parse_method(spec)  # validate early, before any process starts
    return specs


def _run_one(job: dict[str, Any], wait: bool = False) -> dict[str, Any] | None:
    """Train one grid point × seed unless finished; None if another live process holds it."""
    directory = Path(job["directory"])
    stored = load_finished(directory, job["run_config"])
    if stored is not None:
        return stored["result"]
    claim = claim_run(directory, wait=wait)
    if claim is None:
        return None
    with claim:
        # Another sweep may have finished this run between the check above and the claim.
        stored = load_finished(directory, job["run_config"])
        if stored is not None:
            return stored["result"]
        if (directory / "summary.json").exists():
            clear_run(directory)  # a finished run of other settings: replaced
        if job.get("threads"):
            import torch

            torch.set_num_threads(job["threads"])
        spec = parse_method(job["spec"])
        data = load_dataset(**job["data"])
        config = TrainConfig(**job["run_config"]["train"])
        write_json_atomic(directory / "config.json", job["run_config"])
        result = train_run(spec, data, config, job["seed"], progress=False,
                           save_model=directory / "model.pt",
                           checkpoint=directory / "checkpoint.pt",
                           metrics=directory / "metrics.jsonl").to_dict()  # fmt: skip
        write_json_atomic(
            directory / "summary.json", {"config": job["run_config"], "result": result}
        )
        remove_checkpoints(directory / "checkpoint.pt")
        return result


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
        select_seeds = check_seeds(select_seeds)
    specs = expand_grid(grid)
    for spec in specs:  # a bad option fails here, before any process starts
        check_method(parse_method(spec), config)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "sweep.json",
                      {"select_seeds": list(select_seeds) if select_seeds is not None else None})  # fmt: skip
    data_args = {"name": dataset, "path": data_path, "label_noise": label_noise,
                 "val_size": val_size, "train_subset": train_subset}  # fmt: skip
    if select_seeds is None:
        return _run_jobs(specs, seeds, config, dataset, data_args, root, workers)
    tuned = _run_jobs(specs, select_seeds, config, dataset, data_args, root, workers)
    from tiltedsam.experiments.report import load_results, select_on_validation

    labels = {parse_method(spec).label for spec in specs}
    pool = [r for r in load_results(root) if r["seed"] in select_seeds and r["method"] in labels]
    winners = list(select_on_validation(pool).values())
    return tuned + _run_jobs(winners, [s for s in seeds if s not in select_seeds], config,
                             dataset, data_args, root, workers)  # fmt: skip


def _run_jobs(specs, seeds, config, dataset, data_args, root, workers) -> list[dict[str, Any]]:
    jobs = []
    for spec_text in specs:
        spec = parse_method(spec_text)
        for seed in seeds:
            run_config = {"method": spec.name, "options": spec.kwargs(), "seed": seed,
                          "dataset": dataset, "data": {k: v for k, v in data_args.items() if k != "path"},
                          "train": asdict(config)}  # fmt: skip
            jobs.append({"spec": spec_text, "seed": seed, "run_config": run_config, "data": data_args,
                         "directory": str(run_dir(root, spec.label, seed)),
                         "threads": max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None})  # fmt: skip
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_run_one, jobs))
            # Runs another sweep held: wait for them (or train them if it gave up).
            waiting = [job for job, r in zip(jobs, results, strict=True) if r is None]
            waited = iter(list(pool.map(_run_waiting, waiting)))
    else:
        results = [_run_one(job) for job in jobs]
        waited = (_run_waiting(job) for job, r in zip(jobs, results, strict=True) if r is None)
    done = [r if r is not None else next(waited) for r in results]
    from tiltedsam.experiments.report import write_sweep_report

    write_sweep_report(root)
    return done
