"""Where a sweep's runs train: jobs made once (:func:`make_jobs`), run by a pluggable executor.

A :class:`Job` is one grid point × seed: everything a process needs to train that run into the
run store.  An executor's ``run(jobs)`` returns one result per job, in order.  The results
directory is the single source of truth: every job goes through
:func:`~tiltedsam.experiments.store.run_or_load` (claims, checkpoints, summaries), so a run
started by one executor is resumed, or read back, by any other, and ``tiltedsam report`` reads
the directory as it always did.

* :class:`LocalExecutor` (``--executor local``, the default): ``workers`` processes on this
  machine (:func:`~tiltedsam.experiments.workers.worker_pool`), each run with
  ``cpus // workers`` threads; a run whose claim another process holds is waited for at the end.
* :class:`~tiltedsam.experiments.ray_executor.RayExecutor` (``--executor ray``, the optional
  extra ``tiltedsam[ray]``): Ray tasks on a local or remote cluster.

An executor may also be given an ``on_epoch`` hook per job (adaptive search prunes through it):
``job.hook`` is a picklable callable ``hook(record) -> bool`` called after every epoch with the
epoch's metrics record; True stops the run after that epoch's checkpoint (:class:`Stopped`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from tiltedsam._validation import check_choice, check_int_at_least
from tiltedsam.data.fingerprint import DataIdentity
from tiltedsam.experiments.configs import DataConfig, TrainConfig
from tiltedsam.experiments.run_control import DEVICES, Stopped
from tiltedsam.experiments.store import run_or_load
from tiltedsam.experiments.train import train_run


@dataclass(frozen=True)
class Job:
    """One run of a sweep: the method spec and seed, where it is stored, what it trains on.

    ``device`` and ``threads`` say where it trains; neither enters the run's key.  ``hook``:
    see the module doc."""

    spec: str
    seed: int
    root: str
    data: DataConfig
    config: TrainConfig
    identity: DataIdentity | None = None
    device: str = "cpu"
    threads: int | None = None
    hook: Callable[[dict[str, Any]], bool] | None = None
    keep_going: bool = False  # a diverging run returns {"failed": why} instead of raising


def make_jobs(
    specs: Sequence[str],
    seeds: Sequence[int],
    *,
    root: str | Path,
    data: DataConfig,
    config: TrainConfig,
    identity: DataIdentity | None = None,
    device: str = "cpu",
) -> list[Job]:
    """Every spec × seed as a :class:`Job` (spec-major, the order of the report's ties)."""
    check_choice("device", device, DEVICES)
    return [Job(spec, seed, str(root), data, config, identity, device)
            for spec in specs for seed in seeds]  # fmt: skip


def run_job(job: Job, wait: bool = False) -> dict[str, Any] | None:
    """Train ``job`` unless finished (in this process); None if another live process holds its
    claim (``wait=False``).  A run stopped by its hook returns ``{"stopped": True, ...}`` with
    the epochs it trained (its checkpoint kept: asked again, it resumes)."""
    from tiltedsam.experiments.compare import run_config
    from tiltedsam.optim import parse_method

    spec = parse_method(job.spec)
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)

    def train(directory: Path) -> dict[str, Any]:
        return train_run(spec, job.data.load(), job.config, job.seed, progress=False,
                         save_model=directory / "model.pt", checkpoint=directory / "checkpoint.pt",
                         metrics=directory / "metrics.jsonl", device=job.device,
                         on_epoch=job.hook).to_dict()  # fmt: skip

    run = run_config(spec, job.seed, job.data.settings(), job.config)
    identity = None if job.identity is None else (lambda: job.identity)
    try:
        result = run_or_load(job.root, run, train, wait=wait, identity=identity)
    except Stopped as stop:
        return {"stopped": True, "method": spec.label, "seed": job.seed,
                "history": stop.history, "config": run.as_dict()}  # fmt: skip
    except FloatingPointError as err:
        if not job.keep_going:
            raise
        return {"failed": str(err).splitlines()[0], "method": spec.label, "seed": job.seed,
                "config": run.as_dict()}  # fmt: skip
    return None if result is None else {**result, "method": spec.label, "config": run.as_dict()}


def _run_waiting(job: Job) -> dict[str, Any] | None:
    return run_job(job, wait=True)


class Executor(Protocol):
    """Runs jobs; ``run`` returns one result dict per job, in the jobs' order."""

    slots: int  # how many runs train at once (adaptive search asks this many points a round)

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """``workers`` processes on this machine (one: in this process).  A pool whose worker died
    (SIGKILL, out of memory) is replaced, up to ``max_retries`` times per ``run``: finished runs
    are read back, the killed one resumes from its checkpoint."""

    def __init__(self, workers: int = 1, max_retries: int = 3) -> None:
        self.workers = self.slots = check_int_at_least("workers", workers, 1)
        self.max_retries = check_int_at_least("max_retries", max_retries, 0)

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        threads = max(1, (os.cpu_count() or 1) // self.workers) if self.workers > 1 else None
        jobs = [replace(job, threads=job.threads or threads) for job in jobs]
        if self.workers == 1:
            results = [run_job(job) for job in jobs]
            waited = (_run_waiting(job) for job, r in zip(jobs, results, strict=True) if r is None)
            return [r if r is not None else next(waited) for r in results]
        from concurrent.futures.process import BrokenProcessPool

        for attempt in range(self.max_retries + 1):
            try:
                return self._pool_run(jobs)
            except BrokenProcessPool:
                if attempt == self.max_retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _pool_run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        from tiltedsam.experiments.workers import worker_pool

        with worker_pool(self.workers) as pool:  # workers die with this process
            results = list(pool.map(run_job, jobs))
            # Runs another sweep held: wait for them (or train them if it gave up).
            waiting = [job for job, r in zip(jobs, results, strict=True) if r is None]
            waited = iter(list(pool.map(_run_waiting, waiting)))
        return [r if r is not None else next(waited) for r in results]

    def close(self) -> None:
        """Nothing to release (the pool lives for one ``run``)."""


__all__ = ["Executor", "Job", "LocalExecutor", "make_jobs", "run_job"]
