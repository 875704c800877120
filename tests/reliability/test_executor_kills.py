"""Issue #22, item 4: kill tests for each executor.  A worker SIGKILLed mid-run, and the driver
SIGKILLed and started again: no run trained twice to completion (one summary per run, its epochs
1..E once each in its metrics), no result lost (every run finishes with its full history), no
process left behind (every descendant of the killed driver ends)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tiltedsam.experiments.reaper import descendants as reaper_descendants

from .conftest import SRC, cli, subprocess_env, write_mnist
from .test_workers import alive, wait_until

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="lists processes through /proc (Linux)"
)

EPOCHS = 30


def _args(data: Path, out: Path, executor: str) -> tuple[str, ...]:
    return ("sweep", "--grid", "sam:rho=0.05/0.1", "--seeds", "0", "--workers", "2",
            "--executor", executor, "--dataset", "mnist", "--data-path", str(data), "--model",
            "mlp", "--epochs", str(EPOCHS), "--batch-size", "32", "--val-size", "20", "--out",
            str(out))  # fmt: skip


def descendants(pid: int) -> set[int]:
    return set(reaper_descendants(pid))


def _training_pid(out: Path, parent) -> tuple[int, Path]:
    """The pid holding the claim of a run that has written a checkpoint (its trainer)."""
    wait_until(lambda: list(out.glob("runs/sam/*/checkpoint.pt")) or parent.poll() is not None,
               180, "no checkpoint within 180 s")  # fmt: skip
    assert parent.poll() is None, f"the sweep ended before the kill: {parent.stderr.read()}"
    run = next(out.glob("runs/sam/*/checkpoint.pt")).parent
    return int((run / "claim").read_text()), run


def _check_finished_once(out: Path) -> None:
    summaries = sorted(out.glob("runs/sam/*/summary.json"))
    assert len(summaries) == 2
    for summary in summaries:
        history = json.loads(summary.read_text())["result"]["history"]
        assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
        lines = (summary.parent / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, EPOCHS + 1))
        assert not (summary.parent / "checkpoint.pt").exists()


def _executors() -> list:
    marks = []
    try:
        import ray  # noqa: F401
    except ImportError:
        marks = [pytest.mark.skip(reason="Ray is not installed (tiltedsam[ray])")]
    return ["local", pytest.param("ray", marks=marks)]


@pytest.mark.parametrize("executor", _executors())
def test_a_worker_killed_mid_run_is_retried_and_the_sweep_finishes(tmp_path, executor):
    data = write_mnist(tmp_path / "mnist.npz", train=240, test=40)
    out = tmp_path / "out"
    parent = cli(*_args(data, out, executor))
    worker, _ = _training_pid(out, parent)
    assert worker != parent.pid and worker in descendants(parent.pid)
    before = descendants(parent.pid)
    os.kill(worker, signal.SIGKILL)
    _, err = parent.communicate(timeout=300)
    assert parent.returncode == 0, err
    _check_finished_once(out)
    wait_until(lambda: not any(alive(p) for p in before), 30,
               f"left behind: {[p for p in before if alive(p)]}")  # fmt: skip


@pytest.mark.parametrize("executor", _executors())
def test_a_killed_driver_leaves_no_process_and_a_restart_finishes_every_run(tmp_path, executor):
    data = write_mnist(tmp_path / "mnist.npz", train=240, test=40)
    out = tmp_path / "out"
    parent = cli(*_args(data, out, executor))
    _training_pid(out, parent)
    family = descendants(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=60)
    wait_until(lambda: not any(alive(p) for p in family), 60,
               f"left behind by the killed driver: {[p for p in family if alive(p)]}")  # fmt: skip
    assert len(list(out.glob("runs/sam/*/summary.json"))) < 2, "killed after the sweep ended"
    again = cli(*_args(data, out, executor))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    _check_finished_once(out)


ORPHAN_MAKER = """
import subprocess, sys, time
from tiltedsam.experiments.reaper import start_reaper
start_reaper()
# a grandchild that, like Ray's agents, would outlive this process
child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"])
time.sleep(2)
print("started", flush=True)
time.sleep(600)
"""


def test_the_reaper_ends_the_descendants_of_a_killed_driver():
    env = {**subprocess_env(), "PYTHONPATH": str(SRC)}
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_MAKER], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert parent.stdout.readline().strip() == "started"
    family = descendants(parent.pid)
    assert len(family) == 3  # the reaper, the child and the grandchild
    os.kill(parent.pid, signal.SIGKILL)
    parent.communicate(timeout=30)  # EOF once the reaper has ended the holders of the pipe
    wait_until(lambda: not any(alive(p) for p in family), 10,
               f"left behind: {[p for p in family if alive(p)]}")  # fmt: skip


def test_a_killed_search_driver_is_restarted_and_resumes_its_trials(tmp_path):
    """--search tpe: the trial left running is failed, its point asked again, its run resumed."""
    pytest.importorskip("optuna")
    data = write_mnist(tmp_path / "mnist.npz", train=240, test=40)
    out = tmp_path / "out"
    args = ("sweep", "--search", "tpe", "--trials", "2", "--grid", "sam:rho=0.02/0.1",
            "--seeds", "0", "--dataset", "mnist", "--data-path", str(data), "--model", "mlp",
            "--epochs", str(EPOCHS), "--batch-size", "32", "--val-size", "20", "--out", str(out))  # fmt: skip
    parent = cli(*args)
    _, run = _training_pid(out, parent)
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=60)
    assert not (run / "summary.json").exists()
    again = cli(*args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert (run / "summary.json").exists()  # the orphan's point was asked again and resumed
    for summary in out.glob("runs/sam/*/summary.json"):
        history = json.loads(summary.read_text())["result"]["history"]
        assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal"))
    )
    (name,) = optuna.get_all_study_names(storage)  # the entry and a hash of the run settings
    assert name.startswith("sam:rho=0.02/0.1 @")
    study = optuna.load_study(study_name=name, storage=storage)
    states = sorted(t.state.name for t in study.trials)
    assert states.count("FAIL") == 1 and states.count("COMPLETE") + states.count("PRUNED") == 2
