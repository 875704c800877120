"""Issue #17, class 2's leftovers and the harness's part of the extra list: a report never mixes
settings or leaves a run out of a mean silently; a seed or a grid point is never counted twice; a
list-valued option has one unambiguous grid syntax; report files survive a failed write; a
scheduled tilt passes the up-front option check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tiltedsam.cli import main
from tiltedsam.experiments.compare import compare
from tiltedsam.experiments.configs import TrainConfig
from tiltedsam.experiments.report import write_sweep_report
from tiltedsam.experiments.selection import expand_grid
from tiltedsam.experiments.study import StudyConfig
from tiltedsam.experiments.sweep import sweep

from .conftest import tiny_data

CONFIG = TrainConfig(model="mlp", epochs=1, batch_size=32)


def _compare(out: Path, seeds=(0, 1), epochs: int = 1) -> list[dict]:
    config = TrainConfig(model="mlp", epochs=epochs, batch_size=32)
    return compare(["erm"], seeds=seeds, config=config, data=tiny_data(), out=out, progress=False)


def test_the_report_command_refuses_a_label_of_mixed_settings(tmp_path, capsys):
    _compare(tmp_path, seeds=[0], epochs=1)
    _compare(tmp_path, seeds=[1], epochs=2)  # one label, two settings, in one directory
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the runs of 'erm' differ in train" in err and "Traceback" not in err


def test_a_summary_without_test_accuracy_is_an_error_naming_it(tmp_path, capsys):
    """It was left out of the mean while the seed column still counted it."""
    _compare(tmp_path)
    summary = sorted(tmp_path.glob("runs/erm/*-seed1/summary.json"))[0]
    stored = json.loads(summary.read_text())
    del stored["result"]["test_accuracy"]
    summary.write_text(json.dumps(stored))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{summary}: the run's result has no test_accuracy" in err


def test_a_run_without_the_validation_accuracy_its_label_has_is_named(tmp_path):
    results = sweep(["erm"], seeds=[0, 1], config=CONFIG, dataset="mnist1d", train_subset=200,
                    val_size=50, out=tmp_path)  # fmt: skip
    results[1] = {**results[1], "val_accuracy": None}
    with pytest.raises(ValueError, match=r"seed1/summary\.json: the run has no val_accuracy"):
        write_sweep_report(tmp_path, results)


def test_report_files_survive_a_failed_write(tmp_path, monkeypatch):
    """Reports go through the atomic writer: a full disk leaves the previous report whole."""
    _compare(tmp_path)
    write_sweep_report(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.glob("*.*")}
    assert tmp_path / "report.md" in before

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tiltedsam._files.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_sweep_report(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.glob("*.*")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_duplicate_seeds_are_refused(tmp_path, capsys):
    """``--seeds 0,0`` trained (or read) one run and counted it as two seeds."""
    with pytest.raises(SystemExit, match="2"):
        main(["compare", "--seeds", "0,0", "--out", str(tmp_path)])
    assert "the seeds must be distinct, got '0,0'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"seeds must be distinct, got \[0, 1, 0\]"):
        compare(["erm"], seeds=[0, 1, 0], data=tiny_data(), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="select_seeds must be distinct"):
        sweep(["erm"], seeds=[1], select_seeds=[0, 0], out=tmp_path)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        StudyConfig(name="s", search={"erm": ["lr=0.1"]}, seeds=(1, 2, 2))
    assert not list(tmp_path.glob("runs/*/*"))  # nothing trained


def test_duplicate_grid_points_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"grid points must be distinct, got \['tsam:tilt=1'\]"):
        sweep(["tsam:tilt=1/1"], out=tmp_path)


def test_a_list_option_is_one_grid_value_in_brackets(tmp_path):
    """``--grid esam2:rhos=0.025/0.05/0.1`` split the radii into three grid values."""
    assert expand_grid(["esam2:rhos=[0.025/0.05/0.1]"]) == ["esam2:rhos=[0.025/0.05/0.1]"]
    assert expand_grid(["esam2:rhos=[0.025/0.05]/[0.05/0.1]"]) == [
        "esam2:rhos=[0.025/0.05]", "esam2:rhos=[0.05/0.1]"]  # fmt: skip
    with pytest.raises(ValueError, match=re.escape("write the list in brackets, e.g. rhos=[")):
        expand_grid(["esam2:rhos=0.025/0.05/0.1"])
    for bad in ("esam2:rhos=[0.1/0.2", "esam2:rhos=0.1]", "esam2:rhos=[[0.1]]"):
        with pytest.raises(ValueError, match="grid 'esam2:rhos="):
            expand_grid([bad])
    (result,) = sweep(["esam2:rhos=[0.025/0.05/0.1]"], config=CONFIG, dataset="mnist1d",
                      train_subset=200, val_size=50, out=tmp_path)  # fmt: skip
    assert result["config"]["options"]["rhos"] == [0.025, 0.05, 0.1]
    assert result["closure_calls"] == 4 * result["steps"]  # 1 + 3 radii per step
    # The same training as compare's spelling of the list: one key, one run.
    assert len(list(tmp_path.glob("runs/esam2/*"))) == 1


def test_a_scheduled_tilt_passes_the_up_front_check(tmp_path):
    """``compare --methods tsam:tilt_schedule=warmup`` was rejected: the check optimizer was
    built without ``total_steps``."""
    (result,) = compare(["tsam:tilt_schedule=warmup,tilt=5,num_samples=2"], config=CONFIG,
                        data=tiny_data(), out=tmp_path, progress=False)  # fmt: skip
    assert result["config"]["options"]["tilt_schedule"] == "warmup"
    assert result["steps"] == 2 and result["closure_calls"] == 2 * 4
