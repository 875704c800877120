"""The evidence page's numbers (``study_report``) against hand computations on a hand-built
study directory: no training, every run's history written here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiltedsam._files import write_json
from tiltedsam.experiments.selection import best_val, final_val
from tiltedsam.experiments.study import STUDY_FILE, Study, StudyConfig
from tiltedsam.experiments.study_report import read_study, study_section
from tiltedsam.experiments.study_summary import summary_row
from tiltedsam.experiments.train import TrainConfig

T_975_2 = 4.302652729911275  # t quantile, 2 degrees of freedom (tables)
T_975_1 = 12.706204736174705  # 1 degree of freedom

SELECTION = {
    "erm": {"final": {"lr": 0.1}, "early": {"lr": 0.01}, "budget": 2,
            "tried": [{"lr": 0.01}, {"lr": 0.1}]},
    "sam": {"final": {"lr": 0.1}, "early": {"lr": 0.1}, "budget": 2,
            "tried": [{"lr": 0.01}, {"lr": 0.1}]},
    "tsam": {"final": {"lr": 0.1}, "early": {"lr": 0.1}, "budget": 2,
             "tried": [{"lr": 0.01}, {"lr": 0.1}]},
}  # fmt: skip


def _config(**overrides: Any) -> StudyConfig:
    values: dict[str, Any] = dict(
        name="tiny",
        dataset="mnist1d",
        train=TrainConfig(model="mlp", epochs=3, batch_size=64, lr=0.05),
        label_noise=0.2,
        val_size=100,
        search={m: ["lr=0.01/0.1"] for m in ("erm", "sam", "tsam")},
        select_seeds=(0,),
        seeds=(1, 2, 3),
        tcurve=(0.0, 1.0),
        flatness_seeds=(),
    )
    values.update(overrides)
    return StudyConfig(**values)


def _history(val: list[float], test: list[float]) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "step_loss": 1.0 / (i + 1), "val_accuracy": v, "test_accuracy": t}
            for i, (v, t) in enumerate(zip(val, test, strict=True))]  # fmt: skip


def _write(study: Study, method: str, options: dict, seed: int, result: dict) -> None:
    directory = study.run_dir(method, options, seed)
    config = study.run_config(method, options, seed)
    write_json(directory / "config.json", config)
    write_json(directory / "summary.json", {"config": config, "result": result})


def _result(val: list[float], test: list[float]) -> dict[str, Any]:
    return {"history": _history(val, test), "train_accuracy": 0.9, "train_accuracy_clean": None}


# final test accuracy is the last epoch's; the early-stopped one is at the best validation
# epoch, which is never the best test epoch here (a test-selected epoch would differ)
FINAL = {"erm": [0.80, 0.82, 0.84], "sam": [0.85, 0.86, 0.84], "tsam": [0.83, 0.84, 0.88]}
EARLY = {"erm": [0.70, 0.71, 0.75], "sam": [0.72, 0.74, 0.76], "tsam": [0.73, 0.73, 0.79]}


def _study(tmp_path: Path, config: StudyConfig | None = None, *, finished: bool = True,
           skip: tuple[tuple[str, int], ...] = (),
           diverged: tuple[tuple[str, int], ...] = ()) -> Study:  # fmt: skip
    """Every method's two selections on seeds 1-3 with FINAL / EARLY test accuracies; the
    seeds in ``skip`` left unrun, those in ``diverged`` stored as diverged."""
    study = Study(config or _config(), tmp_path, log=lambda line: None)
    summary = study.summary(SELECTION, done=finished)
    write_json(tmp_path / STUDY_FILE, summary)
    for method, chosen in SELECTION.items():
        for i, seed in enumerate(study.config.seeds):
            if (method, seed) in skip:
                continue
            f, e = FINAL[method][i], EARLY[method][i]
            for options in (chosen["final"], chosen["early"]):
                # best validation at epoch 2 (test e there); test peaks at epoch 1 (0.99)
                result = (
                    {"diverged": "nan", "history": []}
                    if (method, seed) in diverged
                    else _result([0.1, 0.3, 0.2], [0.99, e, f])
                )
                _write(study, method, options, seed, result)
    return study


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def test_summary_row_matches_a_hand_computation(tmp_path):
    row = _cells(summary_row(read_study(_study(tmp_path).out), "#tiny"))
    erm = np.array(FINAL["erm"]) * 100
    assert row[1] == f"{erm.mean():.2f} ± {erm.std(ddof=1):.2f}"  # sample std, not the sem
    assert row[2] == "72.00 ± 2.65"  # early: test at the best-validation epoch, never 99
    # TSAM − ERM, both early-stopped: differences 3, 2, 4 points, sd 1
    half = T_975_2 * 1.0 / np.sqrt(3)
    assert row[7] == f"+3.00 [{3 - half:+.2f}, {3 + half:+.2f}]"
    # TSAM final − ERM early: 13, 13, 13 points: the sign test (p = 1/4), no 95% interval
    assert row[8] == "+13.00 (all 3 differences equal: no interval) (n.s.)"
    # TSAM − SAM, final: -2, -2, +4 points
    d = np.array([-2.0, -2.0, 4.0])
    half = T_975_2 * d.std(ddof=1) / np.sqrt(3)
    assert row[9] == f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] (n.s.)"


def test_a_missing_seed_pairs_by_seed_and_says_n(tmp_path):
    """TSAM has no seed 2: its cells are over seeds 1 and 3, paired with ERM's seeds 1 and 3
    (not ERM's first two), and the row says n wherever it is below the report seeds."""
    study = _study(tmp_path, skip=(("tsam", 2),))
    row = _cells(summary_row(read_study(study.out), "#tiny"))
    assert row[1] == "82.00 ± 2.00"  # ERM: all three seeds, no n needed
    assert row[5] == "85.50 ± 3.54 (n = 2)"
    half = T_975_1 * np.std([3.0, 4.0], ddof=1) / np.sqrt(2)  # early: seeds 1 and 3: 3, 4 pts
    assert row[7] == f"+3.50 [{3.5 - half:+.2f}, {3.5 + half:+.2f}] (n.s., n = 2)"


def test_a_diverged_report_run_is_named_not_silently_dropped(tmp_path):
    study = _study(tmp_path, diverged=(("sam", 3),))
    view = read_study(study.out)
    row = _cells(summary_row(view, "#tiny"))
    assert row[3] == "85.50 ± 0.71 (n = 2)"
    section = study_section(view, tmp_path / "img", "tiny")
    assert "SAM final seed 3; SAM early-stopped seed 3" in section  # named, per delivery


def test_a_run_that_diverged_late_is_early_stopped_at_its_best_epoch_before(tmp_path):
    # SAM seed 3 finished two epochs (best validation at epoch 2, test 0.76 there), then
    # diverged: no final model, but early stopping would have delivered epoch 2.
    study = _study(tmp_path)
    late = {"diverged": "nan at epoch 3", "history": _history([0.1, 0.3], [0.99, 0.76])}
    for options in (SELECTION["sam"]["final"], SELECTION["sam"]["early"]):
        _write(study, "sam", options, 3, late)
    view = read_study(study.out)
    assert best_val(late) == 0.3 and final_val(late) == -1.0
    assert set(view.early["sam"]) == {1, 2, 3} and set(view.final["sam"]) == {1, 2}
    row = _cells(summary_row(view, "#tiny"))
    assert row[3] == "85.50 ± 0.71 (n = 2)"  # final: seeds 1 and 2
    assert row[4] == "74.00 ± 2.00"  # early: 72, 74 and 76, seed 3's epoch before divergence
    section = study_section(view, tmp_path / "img", "tiny")
    assert "SAM final seed 3" in section and "SAM early-stopped seed 3" not in section
    assert (
        "early-stopped at their best epoch before (in the early-stopping means): SAM seed 3"
        in section
    )


def test_an_unfinished_study_is_marked_in_the_summary(tmp_path):
    row = _cells(summary_row(read_study(_study(tmp_path, finished=False).out), "#tiny"))
    assert "running" in row[0]
    row = _cells(summary_row(read_study(_study(tmp_path / "done").out), "#tiny"))
    assert "running" not in row[0]


def _tcurve_study(tmp_path: Path) -> Study:
    """TSAM's t-curve: t = 1 is its final selection (seeds 1-3), t = 0 has finished seed 1."""
    study = _study(tmp_path, finished=False)
    _write(study, "tsam", {"lr": 0.1, "tilt": 0}, 1, _result([0.1, 0.3, 0.2], [0.5, 0.5, 0.83]))
    return study


def test_the_tcurve_compares_tilts_on_the_same_seeds(tmp_path):
    """t = 1 has seeds 1-3 (83, 84, 88) but t = 0 only seed 1: a row over seeds 1-3 next to one
    over seed 1 would show a difference of seeds as one of tilts."""
    section = study_section(read_study(_tcurve_study(tmp_path).out), tmp_path / "img", "tiny")
    rows = {r.split("|")[1].strip(): _cells(r) for r in section.splitlines()
            if r.startswith("| 0 |") or r.startswith("| 1 |")}  # fmt: skip
    assert rows["1"][1] == rows["0"][1] == "1"  # seed 1 only, for both
    assert rows["1"][2] == "83.00" and rows["0"][2] == "83.00"  # one seed: no "± 0.00" interval


def test_an_empty_tcurve_renders_no_table(tmp_path):
    config = _config(tcurve=(0.0, 5.0))
    section = study_section(read_study(_study(tmp_path, config).out), tmp_path / "img", "tiny")
    assert "| t | seeds |" not in section


def test_the_section_names_the_base_optimizer_and_glue_test_split(tmp_path):
    train = TrainConfig(model="mlp", epochs=3, batch_size=64, lr=1e-4, base="adamw")
    config = _config(train=train, dataset="glue:SST-2")
    section = study_section(read_study(_study(tmp_path, config).out), tmp_path / "img", "tiny")
    assert "AdamW" in section and "SGD" not in section
    assert "GLUE dev set as the test set" in section and "full test set" not in section
    section = study_section(read_study(_study(tmp_path / "sgd").out), tmp_path / "img", "tiny")
    assert "SGD momentum 0.9" in section


def test_curve_bands_are_the_sample_std_of_the_tables():
    from tiltedsam.experiments.study_figures import mean_std

    mean, std = mean_std(np.array([[1.0, 2.0], [3.0, 6.0]]))
    assert mean.tolist() == [2.0, 4.0]
    assert std == pytest.approx([np.sqrt(2.0), np.sqrt(8.0)])
    assert mean_std(np.array([[1.0, 2.0]]))[1].tolist() == [0.0, 0.0]  # one seed: no band


@pytest.mark.parametrize(
    ("low", "high", "least"), [(0.2, 2.3, 3), (0.3, 0.9, 3), (0.01, 3.0, 4), (1e-4, 3.0, 4)]
)
def test_the_log_loss_axis_labels_enough_ticks_to_read(low, high, least):
    """A loss falling from 2.3 to 0.2 spans just over a decade: matplotlib's default labels one
    tick (1) there; the figure labels at least ``least`` ticks inside the drawn range, beyond
    one decade only 1-2-5 multiples of powers of ten (no crowded minor labels), beyond three
    decades only the powers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tiltedsam.experiments.study_figures import _label_log_axis

    fig, ax = plt.subplots()
    ax.plot([1, 2], [low, high])
    _label_log_axis(ax)
    fig.canvas.draw()
    bottom, top = ax.get_ylim()
    ticks = ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
    shown = {t.get_loc() for t in ticks if bottom <= t.get_loc() <= top and t.label1.get_text()}
    plt.close(fig)
    assert len(shown) >= least, sorted(shown)
    decades = np.log10(high / low)
    if decades > 1:
        allowed = (1,) if decades > 3 else (1, 2, 5)
        mantissas = {round(x / 10 ** np.floor(np.log10(x) + 1e-9)) for x in shown}
        assert mantissas <= set(allowed), sorted(shown)


def test_cost_row_divides_the_recorded_cpu_time_and_passes(tmp_path):
    """Passes per step are closure calls over steps; CPU seconds the mean over the final
    selections' runs on the seeds every method costed; the ratios divide those means (not the
    mean of per-seed ratios, not a median).  Without recorded cost: no row."""
    from tiltedsam.experiments.study_summary import cost_row

    study = _study(tmp_path)
    assert cost_row(read_study(study.out), "#tiny") is None  # the hand-built runs record none

    def record(passes: dict[str, float], seconds: dict[str, list[float]], skip=()) -> list[str]:
        for method, chosen in SELECTION.items():
            for i, seed in enumerate(study.config.seeds):
                path = study.run_dir(method, chosen["final"], seed) / "summary.json"
                stored = json.loads(path.read_text())
                cost = {"steps": 30, "closure_calls": round(30 * passes[method]),
                        "cpu_time": seconds[method][i]}  # fmt: skip
                for key in cost:
                    stored["result"].pop(key, None)
                if (method, seed) not in skip:
                    stored["result"].update(cost)
                write_json(path, stored)
        return _cells(cost_row(read_study(study.out), "#tiny"))

    seconds = {
        "erm": [60.0, 60.0, 120.0],
        "sam": [100.0, 200.0, 150.0],
        "tsam": [300.0, 600.0, 900.0],
    }
    row = record({"erm": 1, "sam": 2, "tsam": 6}, seconds)
    # means 80 / 150 / 600: 7.5x and 4.0x (the mean of per-seed ratios would be 7.5x and 4.5x)
    assert row[1:] == ["1 / 2 / 6", "80 / 150 / 600", "7.5×", "4.0×"]
    # SAM has no cost on seed 2: every method over seeds 1 and 3 (ERM 90, SAM 125, TSAM 600)
    row = record({"erm": 1, "sam": 2, "tsam": 6}, seconds, skip=(("sam", 2),))
    assert row[0].endswith("(n = 2)")
    assert row[1:] == ["1 / 2 / 6", "90 / 125 / 600", "6.7×", "4.8×"]


def test_study_json_round_trip_is_readable(tmp_path):
    """A hand-built directory is read like a real one (guards the helpers above)."""
    study = _study(tmp_path)
    stored = json.loads((study.out / STUDY_FILE).read_text())
    assert stored["finished"] is True
    view = read_study(study.out)
    assert sorted(view.final["erm"]) == [1, 2, 3]


@pytest.mark.parametrize("label_noise", [0.0, 0.2])
def test_clean_label_training_accuracy_is_shown_only_with_label_noise(tmp_path, label_noise):
    """Without noise the clean labels are the labels trained on; a stored clean-label accuracy
    there (runs before the loader kept the clean labels aligned with a subset stored a wrong
    one) is never shown."""
    study = _study(tmp_path, _config(label_noise=label_noise))
    for summary in tmp_path.glob("runs/*/*/summary.json"):
        stored = json.loads(summary.read_text())
        stored["result"]["train_accuracy_clean"] = 0.1
        write_json(summary, stored)
    section = study_section(read_study(study.out), tmp_path / "img", "tiny")
    erm_row = next(line for line in section.splitlines() if line.startswith("| ERM |"))
    train_cell = _cells(erm_row)[3]
    assert train_cell == ("90.0 ± 0.0 / 10.0 ± 0.0" if label_noise else "90.0 ± 0.0")


def test_flatness_row_ranks_solutions_like_a_brute_force_spearman(tmp_path):
    """ρ(λ1, test acc) over the 9 analysed solutions = the Pearson correlation of average
    ranks (ties share their mean rank), computed here by counting; means and orders by hand."""
    from tiltedsam.experiments.study_analysis import analysis_settings
    from tiltedsam.experiments.study_summary import flatness_row

    study = _study(tmp_path, _config(flatness_seeds=(1, 2, 3), flatness={"draws": 7}))
    lam = {"erm": [40.0, 35.0, 50.0], "sam": [3.0, 2.0, 4.0], "tsam": [5.0, 3.0, 6.0]}
    settings = analysis_settings({"draws": 7})
    for method, chosen in SELECTION.items():
        for i, seed in enumerate((1, 2, 3)):
            write_json(study.run_dir(method, chosen["final"], seed) / "analysis.json",
                       {"lambda1": lam[method][i], "trace": 10 * lam[method][i],
                        "settings": settings})  # fmt: skip
    # measured with other settings (the defaults): left out, not pooled with the rest
    write_json(study.run_dir("erm", {"lr": 0.1}, 4) / "analysis.json",
               {"lambda1": 1.0, "trace": 1.0, "settings": analysis_settings()})  # fmt: skip
    row = _cells(flatness_row(read_study(tmp_path), "#x"))

    def ranks(values: list[float]) -> np.ndarray:
        return np.array([sum(w < v for w in values) + (sum(w == v for w in values) + 1) / 2
                         for v in values])  # fmt: skip

    x = [v for m in ("erm", "sam", "tsam") for v in lam[m]]
    y = [v for m in ("erm", "sam", "tsam") for v in FINAL[m]]
    rho = np.corrcoef(ranks(x), ranks(y))[0, 1]
    assert row[1] == "9"
    assert row[2] == "41.7 / 3 / 4.67"
    assert (
        row[3] == f"{100 * np.mean(FINAL['erm']):.2f} / 85.00 / {100 * np.mean(FINAL['tsam']):.2f}"
    )
    assert row[4].startswith(f"{rho:+.2f} (p = ")
    assert row[5].startswith(f"{rho:+.2f} (p = ")  # tr H = 10 λ1: the same ranks
    assert row[6] == "SAM < TSAM < ERM"
    assert row[7] in ("SAM > TSAM > ERM", "TSAM > SAM > ERM")  # SAM and TSAM both average 85%
    assert flatness_row(read_study(_study(tmp_path / "unanalysed").out), "#x") is None
    # a method without analysed solutions keeps its column ("–"), the others stay in theirs
    (study.run_dir("sam", SELECTION["sam"]["final"], 2) / "analysis.json").unlink()
    for seed in (1, 3):
        write_json(study.run_dir("sam", SELECTION["sam"]["final"], seed) / "analysis.json",
                   {"lambda1": 3.0, "trace": 30.0, "settings": analysis_settings()})  # fmt: skip
    row = _cells(flatness_row(read_study(tmp_path), "#x"))
    assert row[1] == "6" and row[2] == "41.7 / – / 4.67"


def test_spearman_p_value_is_exact_for_few_points():
    """Three points in perfect order: 2 of the 3! orderings reach |rho| = 1, so p = 1/3 (the t
    approximation says 0); four points: counted over all 24 orderings here by brute force."""
    import itertools

    from scipy.stats import spearmanr

    from tiltedsam.experiments.stats import spearman

    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx((1.0, 1 / 3))
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    x, y = [0.3, 0.1, 0.4, 0.2], [5.0, 7.0, 6.0, 8.0]
    rho = spearmanr(x, y).statistic
    reach = [abs(spearmanr(x, list(p)).statistic) >= abs(rho) - 1e-12
             for p in itertools.permutations(y)]  # fmt: skip
    assert spearman(x, y) == pytest.approx((rho, sum(reach) / len(reach)))
