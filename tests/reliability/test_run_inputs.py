"""Issue #17, class 1: a result that belongs to other inputs.  A run's key holds the data's
settings, not what its files hold: every run records the identity of its data (a SHA-256 of
the files read) and a command that would read it back, or resume it, for data of another
identity fails with an error naming the file and both sources (exit 2 in the CLI)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tiltedsam.cli import main
from tiltedsam.data.fingerprint import DataIdentity, dataset_identity, glue_identity
from tiltedsam.experiments.compare import compare
from tiltedsam.experiments.configs import TrainConfig
from tiltedsam.experiments.report import write_sweep_report
from tiltedsam.experiments.store import (
    DataMismatchError,
    RunConfig,
    full_options,
    run_or_load,
)
from tiltedsam.experiments.study import Study, StudyConfig
from tiltedsam.experiments.sweep import sweep

from .conftest import write_mnist

CONFIG = TrainConfig(model="mlp", epochs=1, batch_size=32)


def relabelled(source: Path, target: Path) -> Path:
    """The same images and shapes with other labels (the issue's B.npz)."""
    with np.load(source) as arrays:
        data = dict(arrays)
    data["y_train"] = (data["y_train"] + 1) % 4
    data["y_test"] = (data["y_test"] + 1) % 4
    np.savez(target, **data)
    return target


def summaries(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.glob("runs/*/*/summary.json")}


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", "--dataset", "mnist", "--data-path", str(data), "--model", "mlp",
            "--epochs", "1", "--batch-size", "32", "--methods", "erm", "--out", str(out),
            "--no-progress", *extra]  # fmt: skip


def test_a_finished_run_is_not_read_back_for_other_data(tmp_path, mnist_file, capsys):
    """The issue's example: `compare --data-path A.npz`, then B.npz (same shapes, other labels)
    printed A's result."""
    other = relabelled(mnist_file, tmp_path / "B.npz")
    out = tmp_path / "out"
    assert main(_args(mnist_file, out)) == 0
    stamps = summaries(out)
    capsys.readouterr()
    assert main(_args(other, out)) == 2
    err = capsys.readouterr().err
    (summary,) = stamps
    assert f"error: {summary}: this run was trained on other data" in err
    assert str(mnist_file) in err and str(other) in err and "--rerun" in err
    assert "Traceback" not in err and summaries(out) == stamps, "nothing read back or trained"
    stored = json.loads(summary.read_text())
    assert stored["data_identity"]["source"] == str(mnist_file)
    assert main(_args(other, out, "--rerun")) == 0  # as the message says
    assert json.loads(summary.read_text())["data_identity"]["source"] == str(other)


def test_a_moved_data_file_keeps_its_runs(tmp_path, mnist_file):
    first = compare(["erm"], config=CONFIG, dataset="mnist", data_path=mnist_file,
                    out=tmp_path / "out", progress=False)  # fmt: skip
    stamps = summaries(tmp_path / "out")
    moved = shutil.copy(mnist_file, tmp_path / "elsewhere.npz")
    again = compare(["erm"], config=CONFIG, dataset="mnist", data_path=moved,
                    out=tmp_path / "out", progress=False)  # fmt: skip
    assert summaries(tmp_path / "out") == stamps and again == first, "read back, not trained"


def test_an_unfinished_run_is_not_resumed_on_other_data(tmp_path):
    """A run interrupted on A's data is not resumed on B's (its checkpoint only knew shapes)."""
    config = RunConfig("erm", full_options("erm", {}, {"lr": 0.1}), 0, {"name": "x"})
    a = DataIdentity("a" * 64, "A.npz")
    b = DataIdentity("b" * 64, "B.npz")

    def interrupted(directory: Path) -> dict:
        (directory / "checkpoint.pt").write_bytes(b"epoch 1")
        raise InterruptedError

    with pytest.raises(InterruptedError):
        run_or_load(tmp_path, config, interrupted, identity=lambda: a)
    config_json = config.directory(tmp_path) / "config.json"
    with pytest.raises(
        DataMismatchError, match=rf"{re.escape(str(config_json))}: .*A\.npz.*B\.npz"
    ):
        run_or_load(tmp_path, config, lambda d: pytest.fail("resumed on B"), identity=lambda: b)
    assert run_or_load(tmp_path, config, lambda d: {"ok": 1}, identity=lambda: a) == {"ok": 1}
    assert run_or_load(tmp_path, config, lambda d: {"ok": 2}, identity=lambda: b,
                       rerun=True) == {"ok": 2}  # fmt: skip


def test_runs_stored_before_identities_were_recorded_are_read_back(tmp_path):
    """Stored studies (hours of CPU) have no data identity: read as they are, key unchanged."""
    config = RunConfig("erm", full_options("erm", {}, {"lr": 0.1}), 0, {"name": "x"})
    assert run_or_load(tmp_path, config, lambda d: {"ok": 1}) == {"ok": 1}
    summary = config.directory(tmp_path) / "summary.json"
    assert "data_identity" not in json.loads(summary.read_text())
    found = run_or_load(tmp_path, config, lambda d: pytest.fail("trained again"),
                        identity=lambda: DataIdentity("c" * 64, "C.npz"))  # fmt: skip
    assert found == {"ok": 1}


def test_sweep_refuses_a_run_of_other_data(tmp_path, mnist_file):
    other = relabelled(mnist_file, tmp_path / "B.npz")
    data = {"dataset": "mnist", "val_size": 20, "out": tmp_path / "out"}
    sweep(["erm"], config=CONFIG, data_path=str(mnist_file), **data)
    with pytest.raises(DataMismatchError, match=r"summary\.json: this run was trained on other"):
        sweep(["erm"], config=CONFIG, data_path=str(other), **data)


def test_study_refuses_a_run_of_other_data(tmp_path, mnist_file):
    other = relabelled(mnist_file, tmp_path / "B.npz")

    def study(path: Path) -> Study:
        config = StudyConfig(name="s", search={"erm": ["lr=0.05"]}, train=CONFIG,
                             dataset="mnist", data_path=str(path), val_size=20,
                             select_seeds=(0,), seeds=(1,), tcurve=())  # fmt: skip
        return Study(config, tmp_path / "out", log=lambda line: None)

    study(mnist_file).execute()
    with pytest.raises(DataMismatchError, match=str(mnist_file)):
        study(other).execute()


def test_the_report_refuses_runs_of_one_label_trained_on_different_data(tmp_path, mnist_file):
    other = relabelled(mnist_file, tmp_path / "B.npz")
    for path, seed in ((mnist_file, 0), (other, 1)):  # other seeds: no run is shared
        compare(["erm"], seeds=[seed], config=CONFIG, dataset="mnist", data_path=path,
                out=tmp_path, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"runs of 'erm' differ in data identity"):
        write_sweep_report(tmp_path)


def test_analyze_refuses_data_other_than_the_runs_trained_on(tmp_path, mnist_file):
    from tiltedsam.analysis.runs import data_of_runs

    compare(["erm"], config=CONFIG, dataset="mnist", data_path=mnist_file, out=tmp_path,
            progress=False)  # fmt: skip
    assert len(data_of_runs(tmp_path, str(mnist_file)).x_train) == 120
    with pytest.raises(DataMismatchError, match="trained on other data"):
        data_of_runs(tmp_path, str(relabelled(mnist_file, tmp_path / "B.npz")))


def test_label_noise_is_part_of_the_run_not_only_of_its_summary(tmp_path, mnist_file):
    """The issue's second example: a run under --label-noise 0 resumed under 0.5 and its
    summary claimed 0.5.  The noise is in the key: each setting trains its own run."""
    results = [compare(["erm"], config=CONFIG, dataset="mnist", data_path=mnist_file,
                       out=tmp_path, progress=False, label_noise=noise)[0]
               for noise in (0.0, 0.5)]  # fmt: skip
    stored = {json.loads(p.read_text())["config"]["data"]["label_noise"]: p
              for p in summaries(tmp_path)}  # fmt: skip
    assert set(stored) == {0.0, 0.5}
    assert results[0]["config"]["data"]["label_noise"] == 0.0
    assert results[1]["train_accuracy"] != results[0]["train_accuracy"]


def test_identities_follow_content_not_paths(tmp_path):
    a = write_mnist(tmp_path / "a.npz")
    b = relabelled(a, tmp_path / "b.npz")
    moved = Path(shutil.copy(a, tmp_path / "moved.npz"))
    assert dataset_identity("mnist", a).sha256 == dataset_identity("mnist", moved).sha256
    assert dataset_identity("mnist", a).sha256 != dataset_identity("mnist", b).sha256
    generated = dataset_identity("mnist1d", None)
    assert "generated by mnist1d" in generated.source
    folder = tmp_path / "glue" / "RTE"
    folder.mkdir(parents=True)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "model.safetensors").write_bytes(b"weights")
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    one = glue_identity(tmp_path / "glue", "RTE", encoder)
    (folder / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    two = glue_identity(tmp_path / "glue", "RTE", encoder)
    (encoder / "model.safetensors").write_bytes(b"other weights")
    assert (
        len({one.sha256, two.sha256, glue_identity(tmp_path / "glue", "RTE", encoder).sha256}) == 3
    )
