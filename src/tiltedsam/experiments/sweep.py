"""``tiltedsam sweep``: a grid of method options × seeds, run in parallel processes, finished runs
skipped, hyperparameters selected on the validation split (never on test).

Grid syntax: ``METHOD:key=v1/v2/...,key2=w1/w2`` expands to the Cartesian product of the listed
values (``tsam:tilt=0/1/5/20/100,num_samples=3/5`` is 10 method specs).  A method given without a
grid runs once with its defaults.

Concurrency: each run directory is claimed by creating ``claim`` with ``O_EXCL`` before training,
so two sweeps pointed at the same directory never train the same configuration twice; a claim
whose process is gone is taken over.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tiltedsam.data import load_dataset
from tiltedsam.experiments.methods import parse_method
from tiltedsam.experiments.store import load_finished, run_dir, write_json_atomic
from tiltedsam.experiments.train import TrainConfig, train_run


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


def _claim(directory: Path) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    claim = directory / "claim"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(claim.read_text() or "0")
            os.kill(pid, 0)
            return False  # a live process owns it
        except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
            claim.unlink(missing_ok=True)  # stale: its process is gone
            return _claim(directory)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def _run_one(job: dict[str, Any]) -> dict[str, Any] | None:
    spec = parse_method(job["spec"])
    directory = Path(job["directory"])
    if load_finished(directory, job["run_config"]) is not None:
        return load_finished(directory, job["run_config"])["result"]
    if not _claim(directory):
        return None
    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    try:
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
        (directory / "checkpoint.pt").unlink(missing_ok=True)
        return result
    finally:
        (directory / "claim").unlink(missing_ok=True)


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
    config = config or TrainConfig()
    specs = expand_grid(grid)
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
    else:
        results = [_run_one(job) for job in jobs]
    done = [r for r in results if r is not None]
    from tiltedsam.experiments.report import write_sweep_report

    write_sweep_report(root)
    return done
