"""Issue #17, class 3: processes left behind.  SIGKILL or SIGTERM to a ``sweep --workers 2``
parent left its pool workers alive (PPID 1, training on).  The workers now die with the parent,
and the sweep started again resumes the runs and finishes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import SRC, cli, subprocess_env, write_mnist

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="lists processes through /proc (Linux)"
)

EPOCHS = 40


def _args(data: Path, out: Path) -> tuple[str, ...]:
    return ("sweep", "--grid", "sam:rho=0.05/0.1", "--seeds", "0", "--workers", "2",
            "--dataset", "mnist", "--data-path", str(data), "--model", "mlp", "--epochs",
            str(EPOCHS), "--batch-size", "32", "--val-size", "20", "--out", str(out))  # fmt: skip


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _start_and_wait_for_training(tmp_path: Path) -> tuple[subprocess.Popen, list[int], Path]:
    data = write_mnist(tmp_path / "mnist.npz", train=240, test=40)
    out = tmp_path / "out"
    parent = cli(*_args(data, out))
    wait_until(lambda: list(out.glob("runs/sam/*/checkpoint.pt")) or parent.poll() is not None,
               120, "no checkpoint within 120 s")  # fmt: skip
    assert parent.poll() is None, f"the sweep ended before it was killed: {parent.stderr.read()}"
    workers = children(parent.pid)
    assert len(workers) == 2, workers
    return parent, workers, data


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_a_killed_sweep_and_a_restart_finishes_the_runs(tmp_path, sig):
    parent, workers, data = _start_and_wait_for_training(tmp_path)
    parent.send_signal(sig)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode in (-sig, 128 + sig), parent.returncode
    assert "Traceback" not in err
    wait_until(lambda: not any(alive(w) for w in workers), 5,
               f"workers {[w for w in workers if alive(w)]} outlived the sweep")  # fmt: skip
    assert not list((tmp_path / "out").glob("runs/sam/*/summary.json")), "killed mid-run"
    # Started again: the runs' claims are free (the flocks died with the workers), the runs
    # resume from their checkpoints and finish.
    again = cli(*_args(data, tmp_path / "out"))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    summaries = list((tmp_path / "out").glob("runs/sam/*/summary.json"))
    assert len(summaries) == 2
    for summary in summaries:
        assert len(json.loads(summary.read_text())["result"]["history"]) == EPOCHS


WATCHDOG_ONLY = """
import sys, time
from tiltedsam.experiments import workers
workers.sys.platform = "not-linux"  # no prctl: only the watchdog thread
def work(seconds):
    time.sleep(seconds)
with workers.worker_pool(2) as pool:
    futures = [pool.submit(work, 600) for _ in range(2)]
    time.sleep(1)
    print("started", flush=True)
    futures[0].result()
"""


def test_the_watchdog_ends_workers_without_prctl(tmp_path):
    """The portable fallback: each worker polls its parent's pid."""
    env = {**subprocess_env(), "PYTHONPATH": str(SRC)}
    parent = subprocess.Popen([sys.executable, "-c", WATCHDOG_ONLY], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert parent.stdout.readline().strip() == "started", parent.stderr.read()
    workers = children(parent.pid)
    assert len(workers) == 2 and all(alive(w) for w in workers)
    os.kill(parent.pid, signal.SIGKILL)
    parent.communicate()
    wait_until(lambda: not any(alive(w) for w in workers), 5, "the watchdog did not end them")
