"""Issue #21's measurement: the cheaper TSAM estimators on accuracy per unit of compute.

``python scripts/cheap_estimators.py [--skip-runs] [--skip-bench]``

1. The two studies of ``configs/cheap/`` (MNIST-1D; MNIST with 40% label noise), every method
   with the same budget of 3 configurations on seed 0 and its selection on seeds 1-5
   (``tiltedsam study``; resumable, runs under ``runs/cheap/<stem>/``).
2. At the selections: TSAM with s = 1 and s = 5, tsam-intermittent with k = 2 and 10.
3. ``tiltedsam bench``'s interleaved step timing (CPU time, one thread) of every method on the
   MNIST-1D MLP and CNN, as a ratio to SAM's step in the same run.
4. ``docs/methods/tsam-cheap.md`` from ``scripts/tsam-cheap.md.template``: a table per data set
   (passes per step, CPU time per step / SAM's, final and early-stopped test accuracy, paired
   differences against TSAM and SAM with 95% CIs) and the accuracy-vs-passes plot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tiltedsam._files import save_figure, write_atomic  # noqa: E402
from tiltedsam.experiments.stats import mean_interval, paired_difference  # noqa: E402
from tiltedsam.experiments.study import Study, load_study_config  # noqa: E402
from tiltedsam.experiments.study_figures import early_test, final_test  # noqa: E402

STUDIES = {"mnist1d": "MNIST-1D, 1-D CNN", "mnist-mlp-noise40": "MNIST, MLP, 40% label noise"}
METHODS = ["erm", "sam", "tsam", "tsam-resample", "tsam-stale", "tsam-split", "tsam-split-rise",
           "tsam-intermittent"]  # fmt: skip
BENCH_METHODS = ["erm", "sam", "tsam", "tsam-resample", "tsam-stale", "tsam-split",
                 "tsam-intermittent"]  # fmt: skip
# A forward-only pass costs about a third of a forward+backward one (docs/performance.md).
FORWARD = 1 / 3


def study(stem: str) -> Study:
    config = load_study_config(ROOT / "configs" / "cheap" / f"{stem}.toml")
    return Study(config, ROOT / "runs" / "cheap" / stem, log=lambda line: print(line, flush=True))


def variants(selection: dict) -> list[tuple[str, str, dict]]:
    """(label, method, options) of every point of the table: the selections and the extras."""
    rows = [(m, m, selection[m]["final"]) for m in METHODS]
    tsam = selection["tsam"]["final"]
    rows[2:3] = [("tsam s=1", "tsam", {**tsam, "num_samples": 1}), ("tsam", "tsam", tsam),
                 ("tsam s=5", "tsam", {**tsam, "num_samples": 5})]  # fmt: skip
    inter = selection["tsam-intermittent"]["final"]
    rows += [("tsam-intermittent k=2", "tsam-intermittent", {**inter, "every": 2}),
             ("tsam-intermittent k=10", "tsam-intermittent", {**inter, "every": 10})]  # fmt: skip
    return rows


def passes(method: str, options: dict, config) -> float:
    """Passes per step in forward+backward units (forward-only scoring at FORWARD)."""
    s = options.get("num_samples", {"tsam-resample": 2, "tsam-stale": 2}.get(method, 3))
    if method == "erm":
        return 1.0
    if method == "sam":
        return 2.0
    if method in ("tsam", "tsam-split", "tsam-split-rise"):
        return 2.0 * s if method == "tsam" else 2.0
    if method == "tsam-resample":
        return s * FORWARD + 2
    if method == "tsam-stale":
        return s * FORWARD + 1
    k = options.get("every", 5)
    return (1 + 2 * s + (k - 1)) / k


def run(stems: list[str]) -> None:
    for stem in stems:
        st = study(stem)
        selection = st.execute()
        for _label, method, options in variants(selection):
            for seed in st.config.seeds:
                st.run(method, options, seed)


def bench() -> dict:
    from tiltedsam.bench.runner import run_bench

    result = run_bench(models=("mlp", "cnn1d"), samples=(2, 3), methods=BENCH_METHODS,
                       repeats=30, memory=False, log=print)  # fmt: skip
    # Each method at the s its runs used (the default): 2 for the resampling estimators, 3 else.
    used = {"tsam-resample": 2, "tsam-stale": 2}
    out = {}
    for row in result.timing:
        if not row["s"] or row["s"] == used.get(row["method"], 3):  # s = 0: erm, sam
            out[(row["model"], row["method"])] = row["cpu_ms"]
    ratios = {}
    for (model, method), ms in out.items():
        ratios.setdefault(method, {})[model] = ms / out[(model, "sam")]
    path = ROOT / "runs" / "cheap" / "bench.json"
    write_atomic(path, json.dumps({"ratios": ratios, "setting": result.setting}, indent=1))
    return ratios


def table(stem: str, bench_ratios: dict) -> tuple[str, list[dict]]:
    st = study(stem)
    selection = json.loads((st.out / "study.json").read_text())["selection"]
    rows, points = [], []
    reference = {}
    for label, method, options in variants(selection):
        results = {s: st.stored(method, options, s) for s in st.config.seeds}
        results = {s: r for s, r in results.items() if r is not None and not r.get("diverged")}
        if not results:
            continue
        reference[label] = results
        cpu = statistics.fmean(r["cpu_time"] / r["steps"] for r in results.values())
        points.append({"label": label, "passes": passes(method, options, st.config),
                       "cpu": cpu, "final": [final_test(r) for r in results.values()],
                       "early": [early_test(r) for r in results.values()], "results": results})  # fmt: skip
    sam_cpu = next(p["cpu"] for p in points if p["label"] == "sam")
    head = ("| method | selected | passes / step | CPU time / step ÷ SAM's (this run) | "
            "bench CPU ÷ SAM (MLP, CNN) | final test acc (%, mean ± 95% CI) | "
            "early-stopped (%, mean ± 95% CI) | − TSAM, final (95% CI) | − SAM, final (95% CI) |")  # fmt: skip
    rows = [head, "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        label = p["label"]
        method = label.split(" ")[0]
        opts = next(o for lab, _m, o in variants(selection) if lab == label)
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(opts.items()))  # fmt: skip
        b = bench_ratios.get(method, {}) if label in METHODS else {}
        bench_text = f"{b['mlp']:.2f}, {b['cnn1d']:.2f}" if b else "–"
        cells = [label, chosen or "defaults", f"{p['passes']:.2f}", f"{p['cpu'] / sam_cpu:.2f}",
                 bench_text, _ms(p["final"]), _ms(p["early"])]  # fmt: skip
        for other in ("tsam", "sam"):
            if label == other:
                cells.append("–")
                continue
            a, o = p["results"], reference[other]
            seeds = sorted(set(a) & set(o))
            d = paired_difference(
                [final_test(a[s]) for s in seeds], [final_test(o[s]) for s in seeds]
            )
            cells.append(d.describe())
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n", points


def _ms(values: list[float]) -> str:
    mean, half = mean_interval(values)
    return f"{100 * mean:.2f} ± {100 * half:.2f}"


def plot(all_points: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_points), figsize=(6.6 * len(all_points), 5.0), dpi=110)
    for ax, (stem, points) in zip(axes, all_points.items(), strict=True):
        stats = {p["label"]: [100 * v for v in mean_interval(p["final"])] for p in points}
        others = [m - h for label, (m, h) in stats.items() if label != "erm"]
        floor = min(others) - 0.4
        # Labels of points at the same cost are stacked top to bottom, never on each other.
        # (Points within 20% of each other's cost count as one place.)
        rank: dict[str, int] = {}
        clusters: list[list[dict]] = []
        for p in sorted(points, key=lambda p: p["passes"]):
            if clusters and p["passes"] <= 1.2 * clusters[-1][0]["passes"]:
                clusters[-1].append(p)
            else:
                clusters.append([p])
        for cluster in clusters:
            cluster.sort(key=lambda p: -stats[p["label"]][0])
            rank.update({p["label"]: i for i, p in enumerate(cluster)})
        for p in points:
            mean, half = stats[p["label"]]
            family = p["label"].split(" ")[0]
            color = {"erm": "tab:gray", "sam": "tab:blue", "tsam": "tab:red"}.get(
                family, "tab:green"
            )
            marker = "s" if family in ("erm", "sam", "tsam") else "o"
            if mean + half < floor:  # far below the rest (ERM under label noise): said in text
                ax.annotate(f"{p['label']}: {mean:.1f} ± {half:.1f} (below the axis)",
                            (p["passes"], floor), textcoords="offset points", xytext=(4, 6),
                            fontsize=8, color=color,
                            arrowprops={"arrowstyle": "->", "color": color})  # fmt: skip
                continue
            ax.errorbar(p["passes"], mean, yerr=half, fmt=marker, color=color, capsize=3)
            ax.annotate(p["label"], (p["passes"], mean), textcoords="offset points",
                        xytext=(7, 5 - 11 * rank[p["label"]]), fontsize=8)  # fmt: skip
        if any(m + h < floor for m, h in stats.values()):
            ax.set_ylim(bottom=floor)
        ax.set_xlim(0.85, 16)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("passes per step (forward+backward units; a forward-only pass = 1/3)")
        ax.set_ylabel("final test accuracy (%), mean and 95% CI over 5 seeds")
        ax.set_title(STUDIES[stem], fontsize=10)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Accuracy against cost: ERM, SAM, TSAM (s = 1, 3, 5) and the cheaper estimators",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-runs", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()
    if not args.skip_runs:
        run(list(STUDIES))
    bench_path = ROOT / "runs" / "cheap" / "bench.json"
    if args.skip_bench and bench_path.exists():
        ratios = json.loads(bench_path.read_text())["ratios"]
    elif args.skip_bench:
        ratios = {}
    else:
        ratios = bench()
    sections, points = [], {}
    for stem, title in STUDIES.items():
        text, points[stem] = table(stem, ratios)
        sections.append(f"### {title}\n\n{text}")
    figure = ROOT / "docs" / "img" / "tsam_cheap_pareto.png"
    plot(points, figure)
    template = (ROOT / "scripts" / "tsam-cheap.md.template").read_text()
    body = (
        "\n".join(sections)
        + "\n![Accuracy against passes per step](../img/tsam_cheap_pareto.png)\n"
    )
    write_atomic(ROOT / "docs" / "methods" / "tsam-cheap.md", template.replace("{{cheap}}", body))
    print("wrote docs/methods/tsam-cheap.md and docs/img/tsam_cheap_pareto.png")


if __name__ == "__main__":
    main()
