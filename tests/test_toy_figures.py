"""The toy figures and the analysis commands run end to end on small settings."""

import json

import pytest
import torch

from tiltedsam.analysis.toy_figures import figure1, figure5_6
from tiltedsam.cli import main
from tiltedsam.experiments import TrainConfig, compare

from .test_experiments import tiny_data


def test_toy_figures_are_written_and_show_the_flat_minimum(tmp_path):
    finals = figure1(tmp_path / "f1.png", tilts=(0, 5), steps=20, num_samples=10, grid_points=60)
    assert (tmp_path / "f1.png").stat().st_size > 10_000
    assert {"ERM", "SAM", "TSAM t=0", "TSAM t=5 uniform", "TSAM t=5 argmin L^t"} <= set(finals)
    # The global minimiser of L^t moves to a flatter basin as t grows (paper Fig. 1's claim).
    assert finals["TSAM t=5 argmin L^t"] > finals["TSAM t=0 argmin L^t"] + 0.5
    minima = figure5_6(tmp_path / "f5.png", tmp_path / "f6.png", rhos=(0.0, 0.4), tilts=(0, 5),
                       repeats=20, grid_points=37)  # fmt: skip
    assert minima["SAM rho=0"] == pytest.approx(1.0)  # ERM picks the sharp minimum at θ = 1
    assert minima["SAM rho=0.4"] == pytest.approx(3.0)  # SAM the flat one at θ = 3
    assert minima["TSAM t=5"] == pytest.approx(3.0)


def test_analyze_command_on_finished_runs(tmp_path, monkeypatch):
    data = tiny_data()
    config = TrainConfig(model="mlp", epochs=1, batch_size=32)
    compare(["erm", "tsam"], seeds=[0, 1], config=config, data=data, out=tmp_path, progress=False)
    assert len(list(tmp_path.glob("runs/*/*/model.pt"))) == 4
    monkeypatch.setattr(
        "tiltedsam.analysis.runs.data_of_runs", lambda root, path=None, labels=None: data
    )
    code = main(["analyze", str(tmp_path), "--subset", "40", "--draws", "5", "--deltas", "0.01"])
    assert code == 0
    result = json.loads((tmp_path / "analysis.json").read_text())
    assert len(result["runs"]) == 4 and len(result["runs"][0]["top_eigenvalues"]) == 5
    assert set(result["cross_evaluation"]) == {
        "erm seed 0",
        "erm seed 1",
        "tsam seed 0",
        "tsam seed 1",
    }
    text = (tmp_path / "analysis.md").read_text()
    assert "| erm |" in text and "Cross-evaluation" in text
    assert torch.isfinite(torch.tensor(result["runs"][0]["trace"]))


def test_analyze_reports_a_missing_directory(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nothing")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_analyze_reloads_the_recorded_data_set(tmp_path):
    from tiltedsam.analysis.runs import data_of_runs

    config = TrainConfig(model="mlp", epochs=1, batch_size=64)
    compare(["erm"], seeds=[0], config=config, dataset="mnist1d", train_subset=300, val_size=50,
            out=tmp_path, progress=False)  # fmt: skip
    data = data_of_runs(tmp_path)
    assert len(data.x_train) == 250 and len(data.x_val) == 50


def test_analyze_selects_runs_by_method_and_validation(tmp_path):
    from tiltedsam.analysis.runs import find_runs, selected_labels

    def fake(label, name, seed, val):
        d = tmp_path / "runs" / label.replace(":", "_") / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "model.pt").write_bytes(b"")
        summary = {"config": {"method": name, "seed": seed},
                   "result": {"method": label, "seed": seed, "val_accuracy": val}}  # fmt: skip
        (d / "summary.json").write_text(json.dumps(summary))

    fake("erm:lr=0.1", "erm", 0, 0.5)
    fake("erm:lr=0.2", "erm", 0, 0.6)
    fake("erm:lr=0.2", "erm", 1, 0.1)  # an extra seed of the winner cannot change the choice
    fake("tsam:tilt=1", "tsam", 0, 0.7)
    (tmp_path / "sweep.json").write_text(json.dumps({"select_seeds": [0]}))
    assert selected_labels(tmp_path, ["erm"]) == ["erm:lr=0.2"]
    assert sorted(selected_labels(tmp_path)) == ["erm:lr=0.2", "tsam:tilt=1"]
    assert len(find_runs(tmp_path, ["erm:lr=0.2"])) == 2
    assert len(find_runs(tmp_path)) == 4
    with pytest.raises(ValueError, match=r"method\(s\) \['sam'\]"):
        selected_labels(tmp_path, ["sam"])
