"""Sweeps: grid expansion, skipping finished runs, selection on validation, parallel workers,
claims; reports; config files."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from tiltedsam.cli import main
from tiltedsam.experiments.configs import load_config_file
from tiltedsam.experiments.report import write_sweep_report
from tiltedsam.experiments.selection import expand_grid, select_on_validation
from tiltedsam.experiments.store import claim_run
from tiltedsam.experiments.sweep import sweep
from tiltedsam.experiments.train import TrainConfig


@pytest.fixture
def mnist_file(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(160) % 4
    x = (rng.random((160, 28, 28)) * 60 + y[:, None, None] * 45).astype(np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x[:120], y_train=y[:120].astype(np.uint8), x_test=x[120:],
             y_test=y[120:].astype(np.uint8))  # fmt: skip
    return path


def test_expand_grid():
    assert expand_grid(["erm", "tsam:tilt=1/5,num_samples=3/5"]) == [
        "erm", "tsam:tilt=1,num_samples=3", "tsam:tilt=1,num_samples=5",
        "tsam:tilt=5,num_samples=3", "tsam:tilt=5,num_samples=5",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown method"):
        expand_grid(["adamax:lr=1/2"])
    with pytest.raises(ValueError, match="key=v1/v2"):
        expand_grid(["tsam:tilt"])


def test_sweep_selects_on_validation_skips_finished_and_reports(tmp_path, mnist_file):
    config = TrainConfig(model="mlp", epochs=2, batch_size=16, lr=0.05)
    kw = {"seeds": [0, 1], "config": config, "dataset": "mnist", "data_path": str(mnist_file),
          "val_size": 20, "out": tmp_path / "sw"}  # fmt: skip
    results = sweep(["erm", "tsam:tilt=0/5"], workers=2, **kw)
    assert len(results) == 6 and all(r["val_accuracy"] is not None for r in results)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").glob("runs/*/*/summary.json")}
    assert len(mtimes) == 6
    again = sweep(["erm", "tsam:tilt=0/5"], workers=1, **kw)
    assert len(again) == 6
    assert mtimes == {p: p.stat().st_mtime_ns for p in mtimes}, "finished runs are not redone"
    report = (tmp_path / "sw" / "report.md").read_text()
    assert "Selected per method" in report and "| tsam:tilt=0 |" in report
    for png in ("accuracy_vs_epoch.png", "accuracy_vs_t.png", "wall_time.png"):
        assert (tmp_path / "sw" / png).stat().st_size > 0
    chosen = select_on_validation(results)
    tsam_runs = {m: [r["val_accuracy"] for r in results if r["method"] == m]
                 for m in ("tsam:tilt=0", "tsam:tilt=5")}  # fmt: skip
    best = max(tsam_runs, key=lambda m: np.mean(tsam_runs[m]))
    assert chosen["tsam"] == best and chosen["erm"] == "erm"
    with pytest.raises(ValueError, match="val_size > 0"):
        sweep(["erm"], **{**kw, "val_size": 0})


def test_claims_prevent_double_work(tmp_path):
    claim = claim_run(tmp_path / "run")
    assert claim is not None
    assert claim_run(tmp_path / "run") is None  # held (flock) by a live owner
    claim.release()
    (tmp_path / "run" / "claim").write_text("999999999")  # a leftover file holds no lock
    again = claim_run(tmp_path / "run")
    assert again is not None
    again.release()


def test_report_command_and_missing_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        write_sweep_report(tmp_path)


def test_config_files(tmp_path, mnist_file, capsys):
    good = tmp_path / "c.toml"
    good.write_text(f'methods = ["erm"]\nseeds = [0]\nepochs = 1\nbatch-size = 32\nmodel = "mlp"\n'
                    f'dataset = "mnist"\ndata_path = "{mnist_file}"\nout = "{tmp_path / "o"}"\n')  # fmt: skip
    assert load_config_file(good)["batch_size"] == 32
    assert main(["compare", "--config", str(good), "--no-progress", "--epochs", "2"]) == 0
    (summary,) = (tmp_path / "o" / "runs" / "erm").glob("*-seed0/summary.json")
    stored = json.loads(summary.read_text())
    assert stored["config"]["train"]["epochs"] == 2  # the flag overrides the file
    assert stored["config"]["train"]["batch_size"] == 32
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 1\nlearning_rate = 0.1\n")
    assert main(["compare", "--config", str(bad)]) == 2
    assert "unknown key(s) ['learning_rate']" in capsys.readouterr().err
    assert main(["compare", "--config", str(tmp_path / "none.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("{}")
    assert main(["compare", "--config", str(tmp_path / "x.json")]) == 2
    assert "must end in .toml" in capsys.readouterr().err
    yml = tmp_path / "c.yaml"
    yml.write_text("epochs: 3\nlr: 0.05\n")
    assert load_config_file(yml) == {"epochs": 3, "lr": 0.05}


def test_two_stage_sweep_tunes_on_select_seeds_only(tmp_path, mnist_file):
    config = TrainConfig(model="mlp", epochs=1, batch_size=16, lr=0.05)
    out = tmp_path / "two"
    results = sweep(["erm:lr=0.01/0.2", "sam"], seeds=[0, 1], select_seeds=[0], config=config,
                    dataset="mnist", data_path=str(mnist_file), val_size=20, out=out)  # fmt: skip
    by_label = {}
    for r in results:
        by_label.setdefault(r["method"], []).append(r)
    seed0 = {m: runs[0]["val_accuracy"] for m, runs in by_label.items() if m.startswith("erm")}
    winner = max(seed0, key=seed0.get)  # ties: the first, as select_on_validation
    assert sorted(r["seed"] for r in by_label[winner]) == [0, 1]
    loser = next(m for m in seed0 if m != winner)
    assert [r["seed"] for r in by_label[loser]] == [0], "only the winner runs the extra seeds"
    assert sorted(r["seed"] for r in by_label["sam"]) == [0, 1]
    report = (out / "report.md").read_text()
    assert "validation accuracy of seeds 0" in report and f"| {winner} | 2 |" in report


def test_tilt_curve_varies_t_alone_at_the_selected_options():
    from tiltedsam.experiments.report import tilt_curve

    def run(t, lr, seed, acc):
        history = [
            {"test_accuracy": acc * (e + 1) / 4, "step_loss": 1.0 / (e + 1)} for e in range(4)
        ]
        return {"method": f"tsam:lr={lr},tilt={t}", "seed": seed, "val_accuracy": acc,
                "test_accuracy": acc, "wall_time": 1.0, "history": history,
                "config": {"method": "tsam", "options": {"lr": lr, "tilt": t}}}  # fmt: skip

    results = [run(1, 0.1, 0, 0.5), run(1, 0.1, 1, 0.7), run(5, 0.1, 0, 0.8), run(5, 0.2, 0, 0.1)]
    text = tilt_curve(results, "tsam:lr=0.1,tilt=5")
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| 1"].split(" | ")[1] == "2"  # two seeds at t=1, lr 0.1
    assert "| 60.00 ± 14.14 |" in rows["| 1"]  # test accuracy mean ± std of 50 and 70
    assert "| 15.00 ± 3.54 |" in rows["| 1"]  # 25% of 4 epochs: epoch 1, acc/4
    assert rows["| 5"].split(" | ")[1] == "1", "the lr=0.2 run is another setting"
    assert tilt_curve(results[:2]) == "", "one t is no curve"


def test_evaluate_does_not_depend_on_its_batch_size():
    """Loss and accuracy equal a float64 one-pass computation, for batches that split the data
    unevenly (the last batch short) and for one batch holding everything."""
    from tiltedsam.experiments.train import evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x, y = torch.randn(1003, 3, 4), torch.randint(0, 5, (1003,))
    with torch.no_grad():
        logits = model.double()(x.double())
        ref_loss = float(nn.functional.cross_entropy(logits, y))
        ref_acc = float((logits.argmax(1) == y).double().mean())
    model.float()
    for batch_size in (7, 256, 1000, 5000):
        loss, acc = evaluate(model, x, y, batch_size=batch_size)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert acc == ref_acc


def test_report_finds_a_grid_point_trained_by_an_earlier_compare(tmp_path, mnist_file):
    """A run keeps the label of the command that trained it first: the compare's ``erm`` is the
    sweep's ``erm:lr=0.05`` (0.05 is the config's lr).  ``tiltedsam report`` must count it as
    that grid point, not drop it and select the other lr."""
    from tiltedsam.experiments.compare import compare
    from tiltedsam.experiments.report import write_sweep_report

    config = TrainConfig(model="mlp", epochs=2, batch_size=16, lr=0.05)
    kw = {"seeds": [0], "config": config, "dataset": "mnist", "data_path": str(mnist_file),
          "val_size": 20, "out": tmp_path / "sw"}  # fmt: skip
    compare(["erm"], progress=False, **kw)
    results = sweep(["erm:lr=0.05/0.01"], **kw)
    assert len(list((tmp_path / "sw").glob("runs/*/*/summary.json"))) == 2  # one run shared
    from_sweep = (tmp_path / "sw" / "report.md").read_text()
    write_sweep_report(tmp_path / "sw")  # what `tiltedsam report DIR` does
    from_disk = (tmp_path / "sw" / "report.md").read_text()
    assert "| erm:lr=0.05 | 1 |" in from_disk and "| erm:lr=0.01 | 1 |" in from_disk
    assert from_disk == from_sweep
    assert {r["method"] for r in results} == {"erm:lr=0.05", "erm:lr=0.01"}


def test_one_grid_point_written_two_ways_is_refused(tmp_path, mnist_file):
    config = TrainConfig(model="mlp", epochs=1, batch_size=16, lr=0.05)
    with pytest.raises(ValueError, match=r"grid points 'erm' and 'erm:lr=0.05' are the same"):
        sweep(["erm", "erm:lr=0.05/0.01"], seeds=[0], config=config, dataset="mnist",
              data_path=str(mnist_file), val_size=20, out=tmp_path / "sw")  # fmt: skip
    assert not (tmp_path / "sw").exists()
