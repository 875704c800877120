"""The run store: one schema and one ``run_or_load`` for every command; runs with other settings
coexist in one directory and only ``rerun`` replaces a finished run (issue #17's second class);
a damaged summary is named, never trained over; every file goes through the one writer."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import re
import time
from pathlib import Path

import pytest

from tiltedsam.experiments.compare import compare
from tiltedsam.experiments.configs import TrainConfig
from tiltedsam.experiments.report import write_sweep_report
from tiltedsam.experiments.store import RunConfig, full_options, run_key, run_or_load
from tiltedsam.experiments.sweep import sweep

from .conftest import tiny_data

SRC = Path(__file__).resolve().parents[2] / "src" / "tiltedsam"


def summaries(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.glob("runs/*/*/summary.json")}


def test_runs_with_other_settings_coexist_and_only_rerun_replaces(tmp_path):
    data = tiny_data()
    one = compare(["erm"], config=TrainConfig(model="mlp", epochs=1, batch_size=32), data=data,
                  out=tmp_path, progress=False)  # fmt: skip
    two = compare(["erm"], config=TrainConfig(model="mlp", epochs=2, batch_size=32), data=data,
                  out=tmp_path, progress=False)  # fmt: skip
    stamps = summaries(tmp_path)
    assert len(stamps) == 2, "the 2-epoch run did not delete the 1-epoch one"
    assert len(one[0]["history"]) == 1 and len(two[0]["history"]) == 2
    again = compare(["erm"], config=TrainConfig(model="mlp", epochs=1, batch_size=32), data=data,
                    out=tmp_path, progress=False)  # fmt: skip
    assert again == one and summaries(tmp_path) == stamps, "finished: read back, not trained"
    compare(["erm"], config=TrainConfig(model="mlp", epochs=1, batch_size=32), data=data,
            out=tmp_path, progress=False, rerun=True)  # fmt: skip
    after = summaries(tmp_path)
    assert len(after) == 2 and sum(after[p] != stamps[p] for p in stamps) == 1, "rerun: that one"


def test_compare_and_sweep_with_the_same_settings_share_their_runs(tmp_path, mnist_file):
    config = TrainConfig(model="mlp", epochs=1, batch_size=32)
    data = {"dataset": "mnist", "data_path": str(mnist_file), "val_size": 20}
    swept = sweep(["erm", "sam"], config=config, out=tmp_path, **data)
    stamps = summaries(tmp_path)
    compared = compare(["erm", "sam"], config=config, out=tmp_path, progress=False, **data)
    assert summaries(tmp_path) == stamps, "compare read the sweep's runs"
    assert [r["test_loss"] for r in compared] == [r["test_loss"] for r in swept]


def test_two_sweeps_with_other_epochs_keep_each_others_results(tmp_path, mnist_file):
    """Issue #17: sweeps with --epochs 2 and 3 on one directory deleted each other's results and
    both failed with ``zip() argument 2 is shorter than argument 1``."""
    data = {"dataset": "mnist", "data_path": str(mnist_file), "val_size": 20, "out": tmp_path}
    for epochs in (2, 3, 2):
        results = sweep(["erm", "sam"], config=TrainConfig(model="mlp", epochs=epochs,
                                                           batch_size=32), **data)  # fmt: skip
        assert {len(r["history"]) for r in results} == {epochs}
        assert "| erm | 1 |" in (tmp_path / "report.md").read_text()  # this sweep's runs
    assert len(summaries(tmp_path)) == 4
    with pytest.raises(ValueError, match=r"the runs of 'erm' differ in train"):
        write_sweep_report(tmp_path)  # a report of the whole directory refuses to mix them


def test_one_training_has_one_key_however_it_is_spelled():
    shared = {"lr": 0.1, "weight_decay": 5e-4}
    keys = {
        run_key(RunConfig("tsam", full_options("tsam", options, shared), 0).as_dict())
        for options in ({}, {"tilt": 1}, {"tilt": 1.0, "lr": 0.1}, {"num_samples": 3})
    }
    assert len(keys) == 1
    other = RunConfig("tsam", full_options("tsam", {"tilt": 2}, shared), 0)
    assert other.key not in keys


def test_a_damaged_summary_is_named_and_never_trained_over(tmp_path):
    config = RunConfig("erm", full_options("erm", {}, {"lr": 0.1}), 0, {"name": "x"})

    def train(directory):
        return {"ok": 1}

    assert run_or_load(tmp_path, config, train) == {"ok": 1}
    summary = config.directory(tmp_path) / "summary.json"
    summary.write_text(summary.read_text()[:20])  # truncated
    with pytest.raises(ValueError, match=rf"{re.escape(str(summary))}: unreadable run summary"):
        run_or_load(tmp_path, config, lambda d: pytest.fail("trained over a damaged run"))
    assert run_or_load(tmp_path, config, lambda d: {"ok": 2}, rerun=True) == {"ok": 2}
    stored = json.loads(summary.read_text())
    assert stored["config"] == config.as_dict() and stored["result"] == {"ok": 2}


# Writing a file anywhere but through tiltedsam._files (one temp-file-and-rename writer).
DIRECT_WRITES = re.compile(
    r"\.write_text\(|\.write_bytes\(|\.savefig\(|np\.savez\(|open\([^)]*[\"'](?:w|wb|a)[\"']"
)


def test_every_file_is_written_by_the_one_atomic_writer():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "_files.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if DIRECT_WRITES.search(code):
                offenders.append(f"{path.relative_to(SRC)}:{number}")
    assert not offenders, "files written outside tiltedsam._files: " + ", ".join(offenders)


def test_a_run_that_fails_before_writing_anything_leaves_no_directory(tmp_path):
    config = RunConfig("erm", full_options("erm", {}, {"lr": 0.1}), 0, {"name": "x"})

    def fails_at_once(directory):
        raise ValueError("model does not fit")

    with pytest.raises(ValueError, match="does not fit"):
        run_or_load(tmp_path, config, fails_at_once)
    assert not config.directory(tmp_path).exists()

    def fails_after_a_checkpoint(directory):
        (directory / "checkpoint.pt").touch()
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_or_load(tmp_path, config, fails_after_a_checkpoint)
    kept = {p.name for p in config.directory(tmp_path).iterdir()}
    assert kept == {"config.json", "checkpoint.pt"}, "what a resume needs must be kept"


def test_a_model_that_does_not_fit_the_data_leaves_no_run_behind(tmp_path):
    with pytest.raises(ValueError, match="does not fit data set"):
        compare(["erm"], config=TrainConfig(model="cnn2d", epochs=1, batch_size=32),
                data=tiny_data(), out=tmp_path, progress=False)  # fmt: skip
    assert list(tmp_path.glob("runs/*/*")) == []


def _fails_at_once(root, config, started):
    def train(directory):
        started.set()
        time.sleep(0.03)
        raise ValueError("model does not fit")

    with contextlib.suppress(ValueError):
        run_or_load(root, config, train)


def _waits_then_trains(root, config, started, results):
    started.wait()
    time.sleep(0.005)
    try:
        results.put(run_or_load(root, config, lambda directory: {"ok": 1}))
    except Exception as error:  # reported to the test
        results.put(f"{type(error).__name__}: {error}")


def test_a_waiting_process_takes_over_a_run_whose_holder_failed_at_once(tmp_path):
    # The holder removes the run directory it left empty; the process waiting on its claim
    # must then claim a new one, not fail on the vanished directory.
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    outcomes = []
    for i in range(12):
        config = RunConfig("erm", full_options("erm", {}, {"lr": 0.1}), i, {"name": "x"})
        started = context.Event()
        holder = context.Process(target=_fails_at_once, args=(tmp_path, config, started))
        waiter = context.Process(target=_waits_then_trains,
                                 args=(tmp_path, config, started, results))  # fmt: skip
        holder.start(), waiter.start()
        holder.join(), waiter.join()
        outcomes.append(results.get(timeout=30))
    assert outcomes == [{"ok": 1}] * 12
