"""``tiltedsam sweep --executor ray``: each run is a Ray task (the optional extra
``tiltedsam[ray]``; the how-to is docs/how-to/ray.md).

* The cluster: ``address`` ``auto`` or ``HOST:PORT`` joins a running one (``ray start``); without
  an address a local cluster is started with ``workers × cpus_per_run`` CPUs and shut down when
  the sweep ends; if the driver is killed, :mod:`~tiltedsam.experiments.reaper` ends what Ray
  leaves running.
* Placement: a task asks for ``cpus_per_run`` CPUs (also the run's torch threads) and
  ``gpus_per_run`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES``; the run trains on ``--device``, which
  must then be ``cuda`` or ``auto``).
* Failures: a task whose worker process dies (SIGKILL, a lost node) is started again by Ray up to
  ``max_retries`` times; it finds the run's claim free (the ``flock`` died with the process) and
  resumes from the last checkpoint.  An exception in a run (a diverged run, a data mismatch) is
  not retried: it ends the sweep as it does with the local executor.
* A run whose claim another process holds (another sweep, or a task of a killed driver still
  ending) is not waited for in a worker: the task returns at once and the run is submitted again
  after the others, until it is read back finished or trained here.

The results directory must be one file system for the driver and every node (module doc of
:mod:`tiltedsam.experiments.store`: claims are ``flock`` s).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tiltedsam._validation import check_int_at_least, check_nonnegative
from tiltedsam.experiments.executors import Job, run_job

RESUBMIT_SECONDS = (0.5, 10.0)  # the first and the longest pause before claimed runs go again


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "--executor ray needs Ray: pip install 'tiltedsam[ray]' (or pip install ray)"
        ) from None
    return ray


def _task(job: Job) -> dict[str, Any] | None:
    """One run in a Ray worker: trained, read back, or None if its claim is held elsewhere."""
    return run_job(job, wait=False)


class RayExecutor:
    """Runs jobs as Ray tasks (module doc)."""

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int = 1,
        cpus_per_run: int = 1,
        gpus_per_run: float = 0,
        max_retries: int = 3,
    ) -> None:
        ray = _ray()
        check_int_at_least("workers", workers, 1)
        self.cpus_per_run = check_int_at_least("cpus_per_run", cpus_per_run, 1)
        self.gpus_per_run = check_nonnegative("gpus_per_run", gpus_per_run)
        self.max_retries = check_int_at_least("max_retries", max_retries, 0)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"ray address must be 'auto' or HOST:PORT, got {address!r}")
        self.connected = not ray.is_initialized()  # by this executor (else: by the caller)
        self.started = address is None and self.connected
        self._reaper = None
        if self.started:  # killed, this driver leaves no process of it behind (reaper.py)
            from tiltedsam.experiments.reaper import start_reaper

            self._reaper = start_reaper()
            ray.init(num_cpus=workers * self.cpus_per_run, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)  # fmt: skip
        elif self.connected:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < self.cpus_per_run:
            raise ValueError(f"cpus_per_run must be at most the cluster's {cpus} CPUs, got "
                             f"{self.cpus_per_run}")  # fmt: skip
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < self.gpus_per_run:
            raise ValueError(f"gpus_per_run must be at most the cluster's {gpus:g} GPUs, got "
                             f"{self.gpus_per_run:g}")  # fmt: skip
        self.slots = max(1, cpus // self.cpus_per_run)
        if self.gpus_per_run:
            self.slots = min(self.slots, max(1, int(gpus // self.gpus_per_run)))
        self._remote = ray.remote(_task).options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
            max_retries=self.max_retries, retry_exceptions=False,
        )  # fmt: skip

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        ray = _ray()
        for job in jobs:
            if self.gpus_per_run and job.device == "cpu":
                raise ValueError("gpus_per_run > 0 places runs on GPUs: give --device cuda or auto")
        jobs = [replace(job, threads=self.cpus_per_run) for job in jobs]
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        pending, pause = list(range(len(jobs))), RESUBMIT_SECONDS[0]
        while pending:
            refs = {self._remote.remote(jobs[i]): i for i in pending}
            held = []
            waiting = list(refs)
            while waiting:  # as they finish, so an error ends the sweep early
                done, waiting = ray.wait(waiting, num_returns=1)
                result = ray.get(done[0])
                if result is None:
                    held.append(refs[done[0]])
                else:
                    results[refs[done[0]]] = result
            pending = sorted(held)
            if pending:  # claimed elsewhere: again after a pause
                time.sleep(pause)
                pause = min(2 * pause, RESUBMIT_SECONDS[1])
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Disconnect if this executor connected; a local cluster it started is shut down with
        it (a joined one keeps running, a connection the caller made stays)."""
        ray = _ray()
        if self.connected and ray.is_initialized():
            ray.shutdown()
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None


__all__ = ["RayExecutor"]
