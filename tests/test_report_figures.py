"""Issue #19: what ``tiltedsam report`` writes for a compare and for a sweep directory, and a
check that every figure the report, the bench and ``analyze`` draw is one to put in a paper:
a title, labelled axes, type of at least 8 pt, no overlapping tick labels, every text inside
the figure, legends that hold each label whole (wrapped, never cut), the spread over seeds."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from tiltedsam import _plotting
from tiltedsam.analysis.runs import plot_flatness
from tiltedsam.bench.scaling import plot_scaling
from tiltedsam.experiments.report import write_compare_report, write_sweep_report


def audit(fig) -> list[str]:
    """What keeps ``fig`` out of a paper (empty when nothing)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    problems = []
    for ax in fig.axes:
        if not (ax.get_title() or fig.get_suptitle()):
            problems.append("no title")
        if not ax.get_xlabel() or not ax.get_ylabel():
            problems.append(f"unlabelled axis ({ax.get_xlabel()!r}, {ax.get_ylabel()!r})")
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            labels = [t for loc, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels(),
                                          strict=True)
                      if low - 1e-9 * abs(low) <= loc <= high + 1e-9 * abs(high)
                      and t.get_visible() and t.get_text()]  # fmt: skip
            boxes = sorted((t.get_window_extent(renderer) for t in labels),
                           key=lambda b: (b.x0, b.y0))  # fmt: skip
            if any(a.overlaps(b) for a, b in itertools.pairwise(boxes)):
                problems.append(f"overlapping tick labels {[t.get_text() for t in labels]}")
            texts += labels
        legend = ax.get_legend()
        if legend is not None:
            texts += list(legend.get_texts())
        for text in texts:
            if not text.get_text():
                continue
            if text.get_fontsize() < 8:
                problems.append(f"{text.get_text()!r} is {text.get_fontsize()} pt")
            box = text.get_window_extent(renderer)
            if (
                box.x0 < page.x0 - 1
                or box.x1 > page.x1 + 1
                or box.y0 < page.y0 - 1
                or (box.y1 > page.y1 + 1)
            ):
                problems.append(f"{text.get_text()!r} is cut by the figure's edge")
    return problems


@pytest.fixture
def figures(monkeypatch):
    """Every figure written through tiltedsam._plotting, audited as it is saved."""
    seen: dict[str, tuple[object, list[str]]] = {}
    save = _plotting.save_figure

    def audited(fig, path):
        seen[str(path).rsplit("/", 1)[-1]] = (fig, audit(fig))
        save(fig, path)

    monkeypatch.setattr(_plotting, "save_figure", audited)
    return seen


def legend_labels(fig) -> list[str]:
    return [re.sub(r"\s", "", t.get_text()) for ax in fig.axes if ax.get_legend()
            for t in ax.get_legend().get_texts()]  # fmt: skip


def run(method, seed, accs, tilt=None, name=None, wall=1.0, val=True):
    options = {"lr": 0.1, "num_samples": 2, "rho": 0.05}
    if tilt is not None:
        options["tilt"] = tilt
    history = [{"epoch": e + 1, "test_accuracy": a, "step_loss": 2 - a}
               | ({"val_accuracy": a - 0.01} if val else {}) for e, a in enumerate(accs)]  # fmt: skip
    return {"method": method, "seed": seed, "config": {"method": name or method,
            "options": options if name == "tsam" else {"lr": 0.1}}, "history": history,
            "test_accuracy": accs[-1], "val_accuracy": accs[-1] - 0.01 if val else None,
            "train_loss": 0.5, "test_loss": 2 - accs[-1],
            "wall_time": wall + seed, "cpu_time": wall, "steps": 10, "closure_calls": 10}  # fmt: skip


LONG = "tsam:tilt=5,num_samples=2,rho=0.05,noise_radius=1.0"


def test_a_compare_directory_gets_its_own_title_n_1_and_no_duplicate_figure(tmp_path, figures):
    results = [run("erm", 0, [0.40, 0.43], val=False),
               run(LONG, 0, [0.41, 0.45], tilt=5.0, name="tsam", val=False)]  # fmt: skip
    write_compare_report(results, tmp_path)
    text = write_sweep_report(tmp_path, results)
    assert text.startswith(f"# Comparison report: {tmp_path.name}")
    assert "43.00 (n = 1)" in text and "± 0.00" not in text
    assert "| erm | 1 | – | 43.00 (n = 1) |" in text  # no validation split, one seed
    assert not (tmp_path / "accuracy_vs_epoch.png").exists(), "accuracy.png is that figure"
    assert not (tmp_path / "accuracy_vs_t.png").exists(), "one tilt is not a curve"
    assert sorted(figures) == ["accuracy.png", "wall_time.png"]
    assert "Figures: accuracy.png, wall_time.png" in text
    for name, (_, problems) in figures.items():
        assert not problems, f"{name}: {problems}"
    assert "".join(LONG.split()) in "".join(legend_labels(figures["accuracy.png"][0]))


def test_a_sweep_gets_error_bars_over_seeds_and_a_t_curve(tmp_path, figures):
    (tmp_path / "sweep.json").write_text(json.dumps({"grid": ["erm", "tsam:tilt=0/1/5/20"]}))
    results = [run("erm", s, [0.5, 0.6 + 0.01 * s]) for s in (0, 1, 2)]
    results += [run(f"tsam:tilt={t:g}", s, [0.5, 0.6 + 0.01 * s + 0.001 * t], tilt=t,
                    name="tsam") for t in (0.0, 1.0, 5.0, 20.0) for s in (0, 1, 2)]  # fmt: skip
    text = write_sweep_report(tmp_path, results)
    assert text.startswith(f"# Sweep report: {tmp_path.name}") and "(n = 1)" not in text
    assert sorted(figures) == ["accuracy_vs_epoch.png", "accuracy_vs_t.png",
                               "convergence_vs_t.png", "wall_time.png"]  # fmt: skip
    for name, (_, problems) in figures.items():
        assert not problems, f"{name}: {problems}"
    curve = figures["accuracy_vs_t.png"][0].axes[0]
    bars = [c for c in curve.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2, "test and validation with error bars over the 3 seeds"
    assert [t.get_text() for t in curve.get_xticklabels()] == ["0", "1", "5", "20"]
    epochs = figures["accuracy_vs_epoch.png"][0].axes[0]
    assert any(isinstance(c, PolyCollection) for c in epochs.collections), "a ± 1 s.d. band"
    wall = figures["wall_time.png"][0].axes[0]
    assert [c for c in wall.containers if isinstance(c, ErrorbarContainer)]


def test_the_bench_and_analyze_figures_pass_the_audit(tmp_path, figures):
    vs_params = {"s": 3, "params": [2698, 23050, 30000, 288778, 1101834, 4300810],
                 "methods": {"tsam": {"cpu": [1.0, 1.01, 1.02, 1.15, 1.17, 1.21]},
                             "official": {"cpu": [0.83, 1.03, 1.04, 1.21, 1.26, 1.32]}}}  # fmt: skip
    vs_s = {"model": "cnn1d", "samples": [1, 2, 3, 4, 5, 6, 8], "erm": {"cpu": 1e-3},
            "methods": {"tsam": {"cpu": [2e-3 * s for s in (1, 2, 3, 4, 5, 6, 8)]}}}  # fmt: skip
    plot_scaling(vs_s, vs_params, tmp_path)
    noise = {"0.01": {"mean": 1.0, "var": 1e-5}, "0.02": {"mean": 1.1, "var": 1e-4},
             "0.05": {"mean": 1.3, "var": 1e-3}}  # fmt: skip
    result = {"setting": {"deltas": [0.01, 0.02, 0.05], "draws": 10},
              "runs": [{"method": m, "noise": noise} for m in ("erm", "erm", LONG)]}  # fmt: skip
    plot_flatness(result, tmp_path / "flatness.png")
    assert sorted(figures) == ["bench_overhead_vs_params.png", "bench_time_vs_s.png",
                               "flatness.png"]  # fmt: skip
    for name, (_, problems) in figures.items():
        assert not problems, f"{name}: {problems}"


def test_the_audit_finds_what_the_issue_named():
    """The control: the old wall-time figure (no title, 7-pt rotated labels, an unlabelled axis)
    and crowded tick labels are reported."""
    with _plotting.paper_style() as plt:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        names = ["erm", "sam:rho=0.05", "tsam:tilt=0,num_samples=2"]
        ax.bar(range(3), [1, 2, 3])
        ax.set_xticks(range(3), [n[:18] for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("training wall time (s)")
        problems = audit(fig)
        assert "no title" in problems and any("7.0 pt" in p for p in problems)
        assert any(p.startswith("unlabelled axis") for p in problems)
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.set_xticks(range(8), [f"label number {i}" for i in range(8)])
        ax.set(title="t", xlabel="x", ylabel="y")
        assert any(p.startswith("overlapping tick labels") for p in audit(fig))
        plt.close("all")


def test_the_accuracy_range_holds_every_band(tmp_path, figures):
    # Two seeds at 56% and 66% after epoch 1: the band reaches 61 - 7.07 = 53.9%, below either
    # run (and above the 30-point zoom floor under the best accuracy, 82%).
    results = [run("tsam", 0, [0.56, 0.80], val=False), run("tsam", 1, [0.66, 0.82], val=False)]
    write_compare_report(results, tmp_path)
    fig, problems = figures["accuracy.png"]
    low, _ = fig.axes[0].get_ylim()
    assert low <= 61 - 100 * 0.1 / 2**0.5 and not problems
