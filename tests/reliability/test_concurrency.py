"""Two sweeps on one results directory: no configuration is trained twice, no file is corrupted,
and both end with every result.  Claims die with their process (SIGKILL included)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tiltedsam._files import write_json
from tiltedsam.experiments import executors as executors_module
from tiltedsam.experiments import store as store_module
from tiltedsam.experiments.store import claim_run

from .conftest import subprocess_env, write_mnist

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock claims are POSIX")

GRID = ["erm", "sam", "tsam:num_samples=2"]
SEEDS = [0, 1]

# A sweep in a child process; every call to train_run is logged (one O_APPEND write per line),
# and the sweep starts only when the test says go, so both children really overlap.
SWEEP = """
import json, os, sys, time
from pathlib import Path
import tiltedsam.experiments.executors as ex
import tiltedsam.experiments.sweep as sw
from tiltedsam.experiments.train import TrainConfig

out, log, data, name, grid, seeds = sys.argv[1:7]
real = ex.train_run
def logged(spec, data, config, seed, **kw):
    with open(log, "a") as handle:
        handle.write(f"{spec.label} {seed} {name}\\n")
    return real(spec, data, config, seed, **kw)
ex.train_run = logged
Path(out + "." + name + ".ready").touch()
while not Path(out + ".go").exists():
    time.sleep(0.01)
results = sw.sweep(json.loads(grid), seeds=json.loads(seeds),
                   config=TrainConfig(model="cnn2d", epochs=1, batch_size=32),
                   dataset="mnist", data_path=data, val_size=32, out=out, workers=1)
print(json.dumps(sorted([r["method"], r["seed"], r["test_loss"]] for r in results)))
"""


def _sweep_child(out, log, data, name):
    args = [str(out), str(log), str(data), name, json.dumps(GRID), json.dumps(SEEDS)]
    return subprocess.Popen([sys.executable, "-c", SWEEP, *args], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_sweeps_on_one_directory_train_each_configuration_once(tmp_path):
    data = write_mnist(tmp_path / "mnist.npz", train=160, test=32)
    out, log = tmp_path / "sweep", tmp_path / "train.log"
    children = [_sweep_child(out, log, data, name) for name in ("A", "B")]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"sweep.{n}.ready").exists() for n in "AB"):
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (tmp_path / "sweep.go").touch()
    outputs = []
    for child in children:
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr
        assert "Traceback" not in stderr
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))

    trained = [tuple(line.split()) for line in log.read_text().splitlines()]
    runs = [(label, seed) for label, seed, _ in trained]
    assert sorted(runs) == sorted((m, str(s)) for m in GRID for s in SEEDS), "each run once"
    assert {who for _, _, who in trained} == {"A", "B"}, "both sweeps trained: they overlapped"
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(GRID) * len(SEEDS)
    for summary in out.glob("runs/*/*/summary.json"):
        assert json.loads(summary.read_text())["result"]["seed"] in SEEDS
    assert len(list(out.glob("runs/*/*/summary.json"))) == 6
    assert not list(out.rglob("claim")) and not list(out.rglob("*.tmp")), "nothing left over"
    report = (out / "report.md").read_text()
    assert all(f"| {m} | 2 |" in report for m in GRID)  # 2 seeds each


HOLD = """
import sys, time
from pathlib import Path
from tiltedsam.experiments.store import claim_run
claim = claim_run(Path(sys.argv[1]))
print("held" if claim else "busy", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_claim_dies_with_its_process_even_on_sigkill(tmp_path):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(run), "60"],
                             env=subprocess_env(), stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    assert claim_run(run) is None, "held by a live process"
    killer = threading.Timer(0.5, child.send_signal, (signal.SIGKILL,))
    killer.start()
    start = time.monotonic()
    claim = claim_run(run, wait=True)  # blocks until the holder is gone
    assert claim is not None and time.monotonic() - start > 0.3
    assert child.wait() == -signal.SIGKILL
    # No stale-pid guessing: the kernel dropped the dead holder's lock, and the file is ours.
    assert (run / "claim").read_text() == str(os.getpid())
    claim.release()
    assert not (run / "claim").exists()


def test_a_run_finished_while_claiming_is_not_trained_again(tmp_path, monkeypatch):
    """The race the re-check closes: a run is seen unfinished, another sweep finishes it, then
    this one gets the claim.  It must read the result, not train the run again."""
    from tiltedsam.experiments.compare import run_config
    from tiltedsam.experiments.configs import DataConfig, TrainConfig
    from tiltedsam.experiments.executors import Job
    from tiltedsam.optim import parse_method

    data, config = DataConfig("mnist1d"), TrainConfig()
    job = Job("erm", 0, str(tmp_path), data, config)
    run = run_config(parse_method("erm"), 0, data.settings(), config)
    directory = run.directory(tmp_path)
    write_json(directory / "summary.json", {"config": run.as_dict(), "result": {"ok": 1}})
    real = store_module.read_summary
    calls = []

    def first_sees_nothing(*args):
        calls.append(1)
        return None if len(calls) == 1 else real(*args)

    monkeypatch.setattr(store_module, "read_summary", first_sees_nothing)
    monkeypatch.setattr(executors_module, "train_run", lambda *a, **k: pytest.fail("trained twice"))
    assert executors_module.run_job(job)["ok"] == 1
    assert len(calls) == 2 and not (directory / "claim").exists()


def test_compare_waits_for_a_run_another_process_holds_and_reads_its_result(tmp_path, monkeypatch):
    compare_module = importlib.import_module("tiltedsam.experiments.compare")
    from tiltedsam.experiments.train import TrainConfig

    from .conftest import tiny_data

    config = TrainConfig(model="mlp", epochs=1, batch_size=16)
    out = tmp_path / "cmp"
    finished = compare_module.compare(["erm"], config=config, data=tiny_data(), out=tmp_path / "ref",
                                      progress=False)  # fmt: skip
    (ref_run,) = (tmp_path / "ref" / "runs" / "erm").glob("*-seed0")
    run = out / "runs" / "erm" / ref_run.name  # the same configuration: the same key
    claim = claim_run(run)  # "another process" is training erm seed 0 ...

    def finish_and_release():  # ... and finishes it after 0.5 s
        for name in ("summary.json", "model.pt", "metrics.jsonl"):
            (run / name).write_bytes((ref_run / name).read_bytes())
        claim.release()

    monkeypatch.setattr(compare_module, "train_run", lambda *a, **k: pytest.fail("trained twice"))
    timer = threading.Timer(0.5, finish_and_release)
    timer.start()
    start = time.monotonic()
    results = compare_module.compare(
        ["erm"], config=config, data=tiny_data(), out=out, progress=False
    )
    assert time.monotonic() - start > 0.4 and results == finished
