"""A training run killed with SIGKILL mid-epoch resumes from its last checkpoint and ends with the
same result, bit for bit, as an uninterrupted run (CPU, one thread).  The killed and the resumed
run are ``python -m tiltedsam compare`` child processes; the reference is the same command run in
the test process."""

from __future__ import annotations

import importlib
import json
import signal
import time

import pytest
import torch

from tiltedsam.cli import main
from tiltedsam.experiments.checkpoint import read_checkpoint

from .conftest import cli, write_mnist

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

EPOCHS = 3
METHOD = "tsam:num_samples=2"


def _args(data, out):
    return ("compare", "--dataset", "mnist", "--data-path", str(data), "--model", "cnn2d",
            "--epochs", str(EPOCHS), "--batch-size", "32", "--methods", METHOD, "--seeds", "0",
            "--val-size", "32", "--out", str(out), "--no-progress")  # fmt: skip


def _finished(out):
    (run,) = (out / "runs" / "tsam").glob("*-seed0")
    summary = json.loads((run / "summary.json").read_text())["result"]
    for record in [summary, *summary["history"]]:
        record.pop("wall_time")  # the clocks are the only fields that may differ
        record.pop("cpu_time")
    return summary, torch.load(run / "model.pt")


def test_sigkill_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    data = write_mnist(tmp_path / "mnist.npz", train=288, test=64)
    victim = cli(*_args(data, tmp_path / "killed"))
    deadline = time.monotonic() + 120
    while not (found := list((tmp_path / "killed").glob("runs/tsam/*-seed0/checkpoint.pt"))):
        assert victim.poll() is None, f"the run ended before its first checkpoint: {victim.stderr}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    (checkpoint,) = found
    seen = read_checkpoint(checkpoint)["epoch"]
    time.sleep(0.1)  # into the next epoch (one takes about 0.5 s here)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    # Killed after checkpoint `seen` was complete and before the next one: mid-epoch.
    assert read_checkpoint(checkpoint)["epoch"] == seen < EPOCHS
    assert not (checkpoint.parent / "summary.json").exists()

    resumed = cli(*_args(data, tmp_path / "killed"))
    # The uninterrupted reference: the same command in this process (one thread, as the child),
    # while the child resumes.
    assert main(list(_args(data, tmp_path / "ref"))) == 0
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Traceback" not in err and "CheckpointWarning" not in err

    got, got_model = _finished(tmp_path / "killed")
    want, want_model = _finished(tmp_path / "ref")
    assert got == want  # accuracies, losses, per-epoch history, closure calls: all equal
    assert got_model.keys() == want_model.keys()
    assert all(torch.equal(got_model[k], want_model[k]) for k in want_model)
    leftovers = sorted(p.name for p in checkpoint.parent.iterdir())
    assert leftovers == ["config.json", "metrics.jsonl", "model.pt", "summary.json"]


def test_ctrl_c_in_the_cli_says_how_to_resume(monkeypatch, capsys):
    compare_module = importlib.import_module("tiltedsam.experiments.compare")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "compare", interrupted)
    assert main(["compare", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
