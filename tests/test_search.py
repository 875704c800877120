"""Issue #22: ``sweep --search tpe`` (Optuna ask/tell in the driver, the same executors and run
store): spaces from grid entries, rounded points keyed as grid points, pruning through the run's
epoch hook, restarts that resume the trials a killed driver left running."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tiltedsam.cli import main
from tiltedsam.experiments.search import Dimension, parse_space, round3

from .reliability.conftest import write_mnist

optuna = pytest.importorskip("optuna")

from tiltedsam.experiments.search import (  # noqa: E402 - after the skip
    JOURNAL,
    PruneHook,
    _recover,
    _storage,
    median_pruner,
    point_spec,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_round3_keeps_three_significant_digits():
    assert round3(0.123456) == 0.123 and round3(12345.0) == 12300.0 and round3(0.0) == 0.0
    assert round3(3.14159e-5) == 3.14e-5


def test_spaces_from_grid_entries():
    name, dims = parse_space("tsam:tilt=0/5/20,rho=0.02/0.1,lr=0.03/0.1/0.3,num_samples=3/5")
    assert name == "tsam"
    kinds = {d.key: d.kind for d in dims}
    assert kinds == {"tilt": "log1p", "rho": "log", "lr": "log", "num_samples": "int"}
    _, dims = parse_space("sam:rho=0.05,adaptive=true/false")
    assert [(d.key, d.kind) for d in dims] == [("rho", "fixed"), ("adaptive", "choice")]
    assert parse_space("erm") == ("erm", [])
    with pytest.raises(ValueError, match="key=v1/v2"):
        parse_space("tsam:tilt")


def test_sampled_points_are_rounded_method_specs_inside_the_range():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    name, dims = parse_space("tsam:tilt=0/20,rho=0.02/0.1")
    for _ in range(20):
        spec = point_spec(name, dims, study.ask())
        options = dict(item.split("=") for item in spec.removeprefix("tsam:").split(","))
        tilt, rho = float(options["tilt"]), float(options["rho"])
        assert 0 <= tilt <= 20 and 0.02 <= rho <= 0.1
        assert round3(tilt) == tilt and round3(rho) == rho
    assert Dimension("t", "log1p", (0, 20)).kind == "log1p" and math.expm1(0) == 0


def test_the_prune_hook_reports_and_prunes_below_the_median(tmp_path):
    journal = str(tmp_path / JOURNAL)
    study = optuna.create_study(study_name="s", storage=_storage(journal), direction="maximize",
                                pruner=median_pruner(1))  # fmt: skip
    for _ in range(4):  # completed trials at 0.9 from epoch 1 on
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(0.9, epoch)
        study.tell(trial, 0.9)
    good, bad = study.ask(), study.ask()
    assert not PruneHook(journal, "s", good.number, True, 1)({"epoch": 1, "val_accuracy": 0.95})
    assert PruneHook(journal, "s", bad.number, True, 1)({"epoch": 1, "val_accuracy": 0.1})
    reloaded = optuna.load_study(study_name="s", storage=_storage(journal))
    assert reloaded.trials[bad.number].intermediate_values == {1: 0.1}


def test_trials_a_killed_driver_left_running_are_failed_and_asked_again_first(tmp_path):
    study = optuna.create_study(study_name="s", storage=_storage(str(tmp_path / JOURNAL)))
    orphan = study.ask()
    orphan.suggest_float("rho", 0.01, 0.1, log=True)
    _recover(study, optuna)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    again = study.ask()
    assert again.suggest_float("rho", 0.01, 0.1, log=True) == orphan.params["rho"]


def _args(data: Path, out: Path, trials: int = 3) -> list[str]:
    return ["sweep", "--search", "tpe", "--trials", str(trials), "--grid",
            "sam:rho=0.02/0.1,lr=0.03/0.3", "--seeds", "0", "--dataset", "mnist", "--data-path",
            str(data), "--model", "mlp", "--epochs", "2", "--batch-size", "32", "--val-size",
            "16", "--out", str(out)]  # fmt: skip


def _only_study(out: Path, entry: str = "sam:rho=0.02/0.1,lr=0.03/0.3"):
    """The journal's one study: named by the entry and a hash of the run settings."""
    storage = _storage(str(out / JOURNAL))
    names = optuna.get_all_study_names(storage)
    assert len(names) == 1 and names[0].startswith(entry + " @"), names
    return optuna.load_study(study_name=names[0], storage=storage)


def test_sweep_search_tpe_end_to_end_and_again_trains_nothing(tmp_path, capsys):
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    out = tmp_path / "out"
    assert main(_args(data, out)) == 0
    printed = capsys.readouterr().out
    assert printed.count("sam:rho=0.02/0.1,lr=0.03/0.3 trial") == 3
    grid = json.loads((out / "sweep.json").read_text())["grid"]
    summaries = sorted(out.glob("runs/sam/*/summary.json"))
    assert 1 <= len(grid) == len(summaries) <= 3  # a repeated point reuses its run
    for spec in grid:  # ordinary, rounded method specs
        options = dict(i.split("=") for i in spec.removeprefix("sam:").split(","))
        assert 0.02 <= float(options["rho"]) <= 0.1 and 0.03 <= float(options["lr"]) <= 0.3
    assert "Selected per method by mean validation accuracy" in (out / "report.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in summaries}
    # Again: the 3 trials are told, nothing is asked or trained; the report is the same.
    assert main(_args(data, out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/sam/*/summary.json")} == stamps
    study = _only_study(out)
    assert len(study.trials) == 3
    # Two more trials: the study goes on from the journal.
    assert main(_args(data, out, trials=5)) == 0
    assert len(_only_study(out).trials) == 5


def test_search_needs_trials_and_a_known_sampler(tmp_path, capsys):
    assert main(["sweep", "--search", "tpe", "--out", str(tmp_path / "o")]) == 2
    assert "--search and --trials go together" in capsys.readouterr().err
    assert main(["sweep", "--search", "tpe", "--trials", "0", "--out", str(tmp_path / "o")]) == 2
    assert "trials must be an int >= 1" in capsys.readouterr().err


def test_a_pruned_trial_counts_towards_the_budget_and_never_enters_selection(
    tmp_path, monkeypatch, capsys
):
    from tiltedsam.experiments import search

    class PruneAllButTheFirst(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number >= 1

    monkeypatch.setattr(search, "median_pruner", lambda warmup: PruneAllButTheFirst())
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    out = tmp_path / "out"
    assert main(_args(data, out)) == 0
    assert capsys.readouterr().out.count("pruned") == 2
    study = _only_study(out)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "PRUNED", "PRUNED"]
    assert len(json.loads((out / "sweep.json").read_text())["grid"]) == 1
    assert len(list(out.glob("runs/sam/*/summary.json"))) == 1
    stopped = [p.parent for p in out.glob("runs/sam/*/checkpoint.pt")]
    assert len(stopped) == 2  # stopped after epoch 1 of 2, resumable
    for run in stopped:
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    report = (out / "report.md").read_text()
    assert report.count("| sam:") == 2  # the completed trial: selected, and in the list
    # A pruned trial's run that finished anyway (with --workers >= 2 a non-first seed can race
    # to its last epoch): `tiltedsam report DIR` keeps to sweep.json's grid and says so.
    from tiltedsam.experiments.configs import DataConfig, TrainConfig
    from tiltedsam.experiments.executors import make_jobs, run_job

    config = json.loads((stopped[0] / "config.json").read_text())
    spec = "sam:" + ",".join(f"{k}={v}" for k, v in config["options"].items()
                             if k in ("rho", "lr"))  # fmt: skip
    data = DataConfig(dataset="mnist", data_path=str(data), val_size=16)
    train = TrainConfig(model="mlp", epochs=2, batch_size=32)
    (job,) = make_jobs([spec], [0], root=out, data=data, config=train)
    assert "val_accuracy" in run_job(job)  # resumed from its checkpoint to the last epoch
    assert len(list(out.glob("runs/sam/*/summary.json"))) == 2
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert report.count("| sam:") == 2 and "1 finished run(s) under runs/ are not points" in report


def test_a_search_with_other_settings_into_the_same_directory_has_its_own_trials(tmp_path, capsys):
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    out = tmp_path / "out"
    assert main(_args(data, out, trials=2)) == 0
    other = [*_args(data, out, trials=2)]
    other[other.index("--epochs") + 1] = "3"
    capsys.readouterr()
    assert main(other) == 0  # its 2 trials are asked and trained, not the first search's told
    assert capsys.readouterr().out.count("sam:rho=0.02/0.1,lr=0.03/0.3 trial") == 2
    storage = _storage(str(out / JOURNAL))
    studies = optuna.get_all_study_names(storage)
    assert len(studies) == 2
    for name in studies:
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == 2


def test_a_diverging_point_is_a_counted_failed_trial_and_the_search_goes_on(tmp_path, capsys):
    """lr 1e6 diverges at every ρ: each trial fails on its own (the search does not crash at
    the first), counts towards the budget, and a restart asks nothing again."""
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    out = tmp_path / "out"
    entry = "sam:rho=0.02/0.1,lr=1e6"
    args = _args(data, out, trials=3)
    args[args.index("--grid") + 1] = entry
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out.count("diverged (non-finite loss") == 3
    assert "no trial of sam:rho=0.02/0.1,lr=1e6 completed" in captured.err
    study = _only_study(out, entry)
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3
    assert all("diverged" in t.user_attrs for t in study.trials)
    assert main(args) == 2  # a restart: the budget is spent, nothing is asked again
    assert capsys.readouterr().out.count("trial") == 0
    assert len(_only_study(out, entry).trials) == 3


def test_float_options_written_as_ints_are_ranges_not_integers():
    kinds = {d.key: d.kind for d in parse_space("tsam:delta=0/1,num_samples=2/6")[1]}
    assert kinds == {"delta": "log1p", "num_samples": "int"}
    assert parse_space("tsam-naive:noise_radius=1/4")[1][0].kind == "log"


def test_an_entry_with_nothing_to_search_is_refused(tmp_path, capsys):
    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    args = _args(data, tmp_path / "out")
    args[args.index("--grid") + 1] = "sam:rho=0.05"
    assert main(args) == 2
    assert "one value per option, nothing to search" in capsys.readouterr().err


def test_a_second_search_driver_on_one_directory_is_refused(tmp_path, capsys):
    import fcntl

    data = write_mnist(tmp_path / "mnist.npz", train=96, test=32)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "search.lock", "a+") as held:  # a live driver's lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(_args(data, out)) == 2
    assert "another --search driver is running" in capsys.readouterr().err
    assert not (out / JOURNAL).exists()
