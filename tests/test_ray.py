"""Issue #22: ``sweep --executor ray`` on a small local Ray cluster (skipped without Ray: it is
the optional extra ``tiltedsam[ray]``).  One cluster for the module, two tiny runs per test."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tiltedsam.cli import main
from tiltedsam.experiments.configs import DataConfig, TrainConfig
from tiltedsam.experiments.executors import make_jobs
from tiltedsam.experiments.store import claim_run

from .reliability.conftest import write_mnist

ray = pytest.importorskip("ray")

from tiltedsam.experiments.ray_executor import RayExecutor  # noqa: E402 - after the skip

CONFIG = TrainConfig(model="mlp", epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of 1 CPU (so one task at a time), shared by the tests here."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--grid", "sam:rho=0.05/0.1", "--seeds", "0", "--dataset", "mnist",
            "--data-path", str(data), "--model", "mlp", "--epochs", "1", "--batch-size", "32",
            "--val-size", "16", "--out", str(out), *extra]  # fmt: skip


def test_sweep_executor_ray_and_the_local_executor_share_the_results(cluster, tmp_path):
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    out = tmp_path / "out"
    assert main(_args(data, out, "--executor", "ray", "--cpus-per-run", "1")) == 0
    summaries = sorted(out.glob("runs/sam/*/summary.json"))
    assert len(summaries) == 2 and (out / "report.md").exists()
    assert ray.is_initialized()  # the caller's connection is left as it was
    stamps = {p: p.stat().st_mtime_ns for p in summaries}
    report = (out / "report.md").read_text()
    # The local executor reads Ray's runs back (no training), and the report is the same.
    assert main(_args(data, out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/sam/*/summary.json")} == stamps
    assert (out / "report.md").read_text() == report


def test_a_run_claimed_elsewhere_is_resubmitted_without_blocking_the_worker(cluster, tmp_path):
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    source = DataConfig(dataset="mnist", data_path=str(data), val_size=16)
    jobs = make_jobs(["sam:rho=0.05", "sam:rho=0.1"], [0], root=tmp_path / "out", data=source,
                     config=CONFIG, identity=source.identity())  # fmt: skip
    executor = RayExecutor()  # the module's cluster: one CPU, so one task at a time
    assert executor.slots == 1 and not executor.connected
    from tiltedsam.experiments.compare import run_config
    from tiltedsam.optim import parse_method

    held = run_config(parse_method(jobs[0].spec), 0, source.settings(), CONFIG)
    claim = claim_run(held.directory(jobs[0].root))  # "another sweep" trains the first run
    released = []

    def release_later() -> None:
        time.sleep(4)
        released.append(time.time())
        claim.release()

    threading.Thread(target=release_later, daemon=True).start()
    first, second = executor.run(jobs)
    assert released, "the executor returned before the claim was released"
    other = Path(jobs[1].root).glob("runs/sam/*-seed0/summary.json")
    finished = {p.stat().st_mtime for p in other}
    # The second run trained while the first was held: the only worker was not blocked.
    assert min(finished) < released[0]
    assert first["method"] == "sam:rho=0.05" and second["method"] == "sam:rho=0.1"
    assert len(first["history"]) == len(second["history"]) == 1


def test_ray_options_are_checked(cluster):
    with pytest.raises(ValueError, match="cpus_per_run must be at most the cluster's 1 CPUs"):
        RayExecutor(cpus_per_run=2)
    with pytest.raises(ValueError, match="gpus_per_run must be at most the cluster's 0 GPUs"):
        RayExecutor(gpus_per_run=1)
    with pytest.raises(ValueError, match="cpus_per_run must be an int >= 1"):
        RayExecutor(cpus_per_run=0)


def test_search_tpe_through_the_ray_executor(cluster, tmp_path, capsys):
    """Ask/tell in the driver, the runs (and the pruner's hook) in Ray tasks."""
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    out = tmp_path / "out"
    args = _args(data, out, "--executor", "ray", "--search", "tpe", "--trials", "2")
    args[args.index("sam:rho=0.05/0.1")] = "sam:rho=0.02/0.1"
    assert main(args) == 0
    assert capsys.readouterr().out.count("sam:rho=0.02/0.1 trial") == 2
    assert (out / "optuna.journal").exists() and (out / "report.md").exists()
    assert 1 <= len(list(out.glob("runs/sam/*/summary.json"))) <= 2
