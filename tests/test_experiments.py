"""Harness: method specs, data loader, compare end to end on small generated data, reports."""

import csv
import importlib
import json
import statistics

import numpy as np
import pytest
import torch

from tiltedsam.cli import main
from tiltedsam.data import ArrayDataset, load_mnist1d
from tiltedsam.experiments import TrainConfig, compare, parse_method
from tiltedsam.experiments import train as train_module
from tiltedsam.experiments.report import summary_table


def tiny_data(n=96, length=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, length, generator=g) * 0.5 + y.view(-1, 1, 1).float()
    return ArrayDataset(x[: n - 32], y[: n - 32], x[n - 32 :], y[n - 32 :], 3, "tiny")


def test_parse_method_specs():
    spec = parse_method("tsam:tilt=20,num_samples=5,sampler=uniform,delta=0.5")
    assert (
        spec.name == "tsam" and spec.label == "tsam:tilt=20,num_samples=5,sampler=uniform,delta=0.5"
    )
    assert spec.kwargs()["tilt"] == 20 and spec.kwargs()["num_samples"] == 5
    assert spec.kwargs()["noise_radius"] == 1.0  # default kept
    assert parse_method("SAM").kwargs() == {"rho": 0.05}
    assert parse_method("tsam:tilt=inf").kwargs()["tilt"] == float("inf")
    with pytest.raises(ValueError, match="unknown method 'lookahead'"):
        parse_method("lookahead")
    with pytest.raises(ValueError, match="key=value"):
        parse_method("tsam:tilt")


def test_mnist1d_is_generated_deterministically_and_cached(tmp_path):
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    a = load_mnist1d(num_samples=300)
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    assert a.x_train.shape == (240, 1, 40) and a.x_test.shape == (60, 1, 40)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert set(a.y_train.tolist()) <= set(range(10))
    path = tmp_path / "m.npz"
    b = load_mnist1d(path, num_samples=300)
    assert path.exists() and torch.equal(a.x_train, b.x_train)
    c = load_mnist1d(path)  # read back from the cache
    assert torch.equal(b.y_test, c.y_test)


def test_empty_or_mismatched_dataset_is_rejected():
    x = torch.zeros(4, 1, 8)
    with pytest.raises(ValueError, match="train split is empty"):
        ArrayDataset(
            x[:0], torch.zeros(0, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), 2, "e"
        )
    with pytest.raises(ValueError, match="x_test has 4 rows but y_test 3"):
        ArrayDataset(
            x, torch.zeros(4, dtype=torch.long), x, torch.zeros(3, dtype=torch.long), 2, "m"
        )


def test_compare_writes_results_and_skips_finished_runs(tmp_path, monkeypatch):
    config = TrainConfig(model="mlp", epochs=2, batch_size=16, lr=0.05)
    out = tmp_path / "cmp"
    methods = ["erm", "sam", "tsam:tilt=5,num_samples=2"]
    results = compare(
        methods, seeds=[0, 1], config=config, data=tiny_data(), out=out, progress=False
    )
    assert [r["method"] for r in results] == [m for m in methods for _ in range(2)]
    for name in ["summary.md", "results.csv", "metrics.csv", "accuracy.png", "results.json"]:
        assert (out / name).stat().st_size > 0
    with open(out / "metrics.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6 * 2
    tsam = next(r for r in results if r["method"].startswith("tsam"))
    assert tsam["closure_calls"] == tsam["steps"] * 4  # ascent: 2 passes × 2 samples

    calls = []
    real = train_module.train_run
    compare_module = importlib.import_module("tiltedsam.experiments.compare")
    monkeypatch.setattr(
        compare_module, "train_run", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = compare(methods, seeds=[0, 1], config=config, data=tiny_data(), out=out, progress=False)
    assert calls == [] and again == json.loads(json.dumps(results))
    compare(
        methods,
        seeds=[0, 1],
        config=TrainConfig(model="mlp", epochs=1, batch_size=16),
        data=tiny_data(),
        out=out,
        progress=False,
    )
    assert len(calls) == 6, "a changed config is trained again"


def test_metrics_csv_columns_hold_their_values_when_stored_and_new_runs_mix(tmp_path):
    # Runs read back from summary.json have their epoch keys sorted; a run trained in this
    # process has them in creation order.  Every cell must sit under its own header.
    config = TrainConfig(model="mlp", epochs=2, batch_size=16, lr=0.05)
    out = tmp_path / "cmp"
    compare(["erm"], seeds=[0], config=config, data=tiny_data(), out=out, progress=False)
    results = compare(["erm"], seeds=[0, 1], config=config, data=tiny_data(), out=out,
                      progress=False)  # fmt: skip
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    expected = [(r["method"], r["seed"], h) for r in results for h in r["history"]]
    assert len(rows) == len(expected) == 4
    for row, (method, seed, epoch) in zip(rows, expected, strict=True):
        assert (row["method"], int(row["seed"])) == (method, seed)
        for key, value in epoch.items():
            assert float(row[key]) == pytest.approx(float(value)), (key, row)


def test_same_seed_gives_identical_runs(tmp_path):
    config = TrainConfig(model="mlp", epochs=1, batch_size=16)
    a = compare(
        ["tsam"], seeds=[3], config=config, data=tiny_data(), out=tmp_path / "a", progress=False
    )
    b = compare(
        ["tsam"], seeds=[3], config=config, data=tiny_data(), out=tmp_path / "b", progress=False
    )
    assert a[0]["test_loss"] == b[0]["test_loss"] and a[0]["train_loss"] == b[0]["train_loss"]


def test_summary_table_mean_and_std_match_hand_computation():
    accs = [0.91, 0.95, 0.96]
    results = [
        {
            "method": "erm",
            "test_accuracy": a,
            "train_loss": 0.1,
            "wall_time": 2.0,
            "closure_calls": 10,
            "steps": 10,
        }
        for a in accs
    ]
    results += [
        {
            "method": "tsam",
            "test_accuracy": 0.9,
            "train_loss": 0.2,
            "wall_time": 12.0,
            "closure_calls": 60,
            "steps": 10,
        }
    ]
    table = summary_table(results)
    mean = statistics.mean([100 * a for a in accs])
    std = statistics.stdev([100 * a for a in accs])
    assert f"| erm | 3 | {mean:.2f} ± {std:.2f} |" in table
    assert "| tsam | 1 | 90.00 (n = 1) | 0.2000 | 6 | 12.0 | 6.0× |" in table  # no ± of one seed


def test_cli_reports_bad_input_clearly(capsys):
    assert main(["compare", "--methods", "adahessian", "--no-progress"]) == 2
    assert "unknown method 'adahessian'" in capsys.readouterr().err
    assert main(["compare", "--epochs", "0", "--no-progress"]) == 2
    assert "epochs must be an int >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--seeds", "a,b"])


def test_all_methods_run_in_the_harness_and_esam1_gets_the_pass_budget(tmp_path):
    from tiltedsam.optim import METHODS, expand_methods

    assert expand_methods(["all"]) == list(METHODS)
    assert parse_method("esam2:rhos=0.025/0.05/0.1").kwargs()["rhos"] == (0.025, 0.05, 0.1)
    config = TrainConfig(model="mlp", epochs=1, batch_size=32, lr=0.05)
    results = compare(
        ["all"], seeds=[0], config=config, data=tiny_data(), out=tmp_path, progress=False
    )
    by_method = {r["method"]: r for r in results}
    assert set(by_method) == set(METHODS)
    assert len(by_method["esam1"]["history"]) == 3 * len(by_method["sam"]["history"])
    assert by_method["esam1"]["closure_calls"] == by_method["tsam"]["closure_calls"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in results)


def test_each_run_directory_holds_config_metrics_summary_and_weights(tmp_path):
    config = TrainConfig(model="mlp", epochs=2, batch_size=32)
    compare(["sam"], seeds=[0], config=config, data=tiny_data(), out=tmp_path, progress=False)
    (run,) = (tmp_path / "runs" / "sam").glob("*-seed0")
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "model.pt",
    }
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    with pytest.raises(ValueError, match="model must be one of"):
        compare(["sam"], seeds=[0], config=TrainConfig(model="vgg"), data=tiny_data(), out=tmp_path / "x",
                progress=False)  # fmt: skip


def test_method_lr_option_equals_the_shared_lr():
    data = tiny_data()
    via_method = train_module.train_run(
        parse_method("sam:lr=0.02"),
        seed=0,
        config=TrainConfig(model="mlp", epochs=1, batch_size=16, lr=0.5),
        data=data,
        progress=False,
    )
    via_config = train_module.train_run(
        parse_method("sam"),
        seed=0,
        config=TrainConfig(model="mlp", epochs=1, batch_size=16, lr=0.02),
        data=data,
        progress=False,
    )
    assert via_method.test_loss == via_config.test_loss
    with pytest.raises(ValueError, match="lr must be a number in"):
        train_module.train_run(
            parse_method("sam:lr=-1"),
            seed=0,
            config=TrainConfig(model="mlp", epochs=1, batch_size=16),
            data=data,
            progress=False,
        )
