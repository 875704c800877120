"""``tiltedsam analyze``: flatness, Hessian spectrum and cross-evaluation of finished runs."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tiltedsam._files import write_atomic
from tiltedsam._plotting import count, finish, paper_style, wrap
from tiltedsam.analysis._model_state import training_subset
from tiltedsam.analysis.cross_eval import cross_evaluate
from tiltedsam.analysis.flatness import noise_flatness
from tiltedsam.analysis.hessian import hutchinson_trace, top_eigenvalues
from tiltedsam.data.mnist1d import ArrayDataset
from tiltedsam.models import create_model


def find_runs(root: Path, labels: Sequence[str] | None = None) -> list[Path]:
    """Run directories under ``root`` that hold a finished summary and final weights (only
    those whose method label is in ``labels`` when given)."""
    runs = sorted(p.parent for p in root.glob("runs/*/*/model.pt"))
    runs = [r for r in runs if (r / "summary.json").exists()]
    if labels is not None:
        wanted = set(labels)
        runs = [r for r in runs
                if json.loads((r / "summary.json").read_text())["result"]["method"] in wanted]  # fmt: skip
    return runs


def selected_labels(root: str | Path, methods: Sequence[str] | None = None) -> list[str]:
    """The method labels a sweep under ``root`` selected on validation (``tiltedsam report``'s
    choice), restricted to the optimizer names in ``methods`` when given."""
    from tiltedsam.experiments.report import load_results, sweep_settings
    from tiltedsam.experiments.selection import select_on_validation
    from tiltedsam.optim import parse_method

    root = Path(root)
    results = load_results(root)
    settings = sweep_settings(root)
    seeds = settings.get("select_seeds")
    pool = results if seeds is None else [r for r in results if r["seed"] in seeds]
    chosen = select_on_validation(pool, [parse_method(s).label for s in settings.get("grid", [])])
    if methods is not None:
        unknown = sorted(set(methods) - set(chosen))
        if unknown:
            raise ValueError(
                f"no runs with validation accuracy for method(s) {unknown} under {root}"
            )
        return [chosen[m] for m in methods]
    return list(chosen.values())


def data_of_runs(
    root: str | Path, data_path: str | None = None, labels: Sequence[str] | None = None
) -> ArrayDataset:
    """The data set the runs under ``root`` (those with a label in ``labels``) trained on, as
    recorded in their configs.  Runs trained on different data settings, or data files that
    are not the ones recorded with the runs, are an error naming the summary file: every run
    is measured on this one data set."""
    from tiltedsam.data import load_dataset
    from tiltedsam.data.fingerprint import dataset_identity
    from tiltedsam.experiments.store import check_identity

    runs = find_runs(Path(root), labels)
    if not runs:
        raise FileNotFoundError(f"no finished runs with model.pt under {root}/runs/")
    summaries = {r: json.loads((r / "summary.json").read_text()) for r in runs}
    config = summaries[runs[0]]["config"]
    setting = config.get("data", {})
    for run, summary in summaries.items():
        if summary["config"].get("data", {}) != setting:
            raise ValueError(
                f"{run / 'summary.json'}: trained on other data settings than "
                f"{runs[0] / 'summary.json'} ({summary['config'].get('data')} vs {setting}); "
                "analyze them separately (--methods)"
            )
    name = config.get("dataset", setting.get("name", "mnist1d"))
    for run, summary in summaries.items():
        check_identity(run / "summary.json", summary, lambda: dataset_identity(name, data_path),
                       "Pass the --data-path the runs were trained on")  # fmt: skip
    return load_dataset(
        name,
        data_path,
        label_noise=setting.get("label_noise", 0.0),
        val_size=setting.get("val_size", 0),
        train_subset=setting.get("train_subset"),
        seed=setting.get("seed", 0),
    )


def load_run(directory: Path, data: ArrayDataset) -> tuple[str, int, nn.Module]:
    summary = json.loads((directory / "summary.json").read_text())
    config = summary["config"]
    model = create_model(config["train"]["model"], data.x_train.shape[1:], data.num_classes)
    model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    return summary["result"]["method"], int(config["seed"]), model


def analyze_runs(
    root: str | Path,
    data: ArrayDataset,
    *,
    subset: int = 1000,
    batch_size: int = 500,
    deltas: Sequence[float] = (0.01, 0.02, 0.05),
    draws: int = 100,
    k: int = 5,
    probes: int = 30,
    rho: float = 0.05,
    tsam_radius: float = 1.0,
    tilts: Sequence[float] = (1.0, 5.0, 20.0, 100.0),
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure every run under ``root`` (or those with a method label in ``labels``); write
    ``analysis.json`` and ``analysis.md`` there."""
    root = Path(root)
    runs = find_runs(root, labels)
    if not runs:
        raise FileNotFoundError(f"no finished runs with model.pt under {root}/runs/")
    index = training_subset(len(data.x_train), subset, seed)  # random: CIFAR is class-sorted
    x, y = data.x_train[index], data.y_train[index]
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    loss_fn = nn.functional.cross_entropy
    per_run: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    for directory in runs:
        method, run_seed, model = load_run(directory, data)
        flat = noise_flatness(model, loss_fn, batches, deltas, draws=draws, tilts=(), seed=seed)
        spectrum = top_eigenvalues(model, loss_fn, batches, k=k, seed=seed, tol=1e-4)
        trace = hutchinson_trace(model, loss_fn, batches, num_probes=probes, seed=seed)
        per_run.append({
            "method": method, "seed": run_seed, "clean_loss": flat.clean_loss,
            "noise": {f"{s.delta:g}": {"mean": s.mean, "var": s.variance} for s in flat.scales},
            "top_eigenvalues": spectrum.eigenvalues, "lanczos_hvps": spectrum.num_hvps,
            "trace": trace.trace,
            "trace_se": trace.std_error,
        })  # fmt: skip
        models[f"{method} seed {run_seed}"] = model
    cross = cross_evaluate(models, loss_fn, batches, rho=rho, tsam_radius=tsam_radius, tilts=tilts,
                           draws=draws, seed=seed)  # fmt: skip
    setting = {"subset": len(x), "subset_draw": "random", "deltas": list(deltas), "draws": draws, "k": k,
               "probes": probes, "rho": rho, "tsam_radius": tsam_radius, "tilts": list(tilts), "seed": seed}  # fmt: skip
    result = {"setting": setting, "runs": per_run, "cross_evaluation": cross}
    write_atomic(root / "analysis.json", json.dumps(result, indent=1))
    write_atomic(root / "analysis.md", analysis_markdown(result))
    plot_flatness(result, root / "flatness.png")
    return result


def plot_flatness(result: dict[str, Any], path: Path) -> None:
    """Mean and variance of L(θ+ε) against δ, one line per method: the mean over seeds with
    error bars of ± one standard deviation (n per method in the legend)."""
    deltas = result["setting"]["deltas"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in result["runs"]:
        groups.setdefault(r["method"], []).append(r)
    with paper_style() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8))
        for method, runs in groups.items():
            for ax, key in zip(axes, ("mean", "var"), strict=True):
                values = [[r["noise"][f"{d:g}"][key] for r in runs] for d in deltas]
                means = [statistics.fmean(v) for v in values]
                stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
                ax.errorbar(deltas, means, yerr=stds, marker="o", ms=4, capsize=3,
                            label=wrap(f"{method} {count(len(runs))}"))  # fmt: skip
        axes[0].set_ylabel("training loss under noise, mean")
        axes[1].set_ylabel("training loss under noise, variance")
        axes[1].set_yscale("log")
        for ax in axes:
            ax.set_xticks(deltas, [f"{d:g}" for d in deltas])
            ax.set_xlabel("noise radius δ  (ε ~ N(0, δ²I))")
        axes[0].legend(loc="best")
        fig.suptitle(f"Loss of the trained models under parameter noise (mean ± 1 s.d. over "
                     f"seeds, {result['setting']['draws']} draws per δ)")  # fmt: skip
        finish(fig, plt, path)


def _ms(values: list[float], fmt: str = ".3g") -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.fmean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def analysis_markdown(result: dict[str, Any]) -> str:
    s = result["setting"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in result["runs"]:
        groups.setdefault(r["method"], []).append(r)
    out = [
        f"Training subset: {s['subset']} examples drawn at random (seed {s['seed']}); noise draws {s['draws']} per δ; "
        f"Lanczos k={s['k']} at tol 1e-4 ({statistics.fmean(r['lanczos_hvps'] for r in result['runs']):.0f} "
        f"HVPs on average); Hutchinson probes {s['probes']}; seed {s['seed']}; BN in eval mode. "
        "Mean ± std over the seeds of each method.\n",
        "| method | L(θ) | λ1 | λ2..λ5 | tr H (Hutchinson) | "
        + " | ".join(f"E/var L(θ+ε), δ={d:g}" for d in s["deltas"])
        + " |",
        "|---|---|---|---|---|" + "---|" * len(s["deltas"]),
    ]
    for method, runs in groups.items():
        lam = [r["top_eigenvalues"] for r in runs]
        cells = [
            method,
            _ms([r["clean_loss"] for r in runs], ".4f"),
            _ms([v[0] for v in lam]),
            ", ".join(
                format(statistics.fmean(v[i] for v in lam), ".3g") for i in range(1, len(lam[0]))
            ),
            _ms([r["trace"] for r in runs]),
        ]
        for d in s["deltas"]:
            key = f"{d:g}"
            cells.append(
                f"{_ms([r['noise'][key]['mean'] for r in runs], '.4f')} / "
                f"{_ms([r['noise'][key]['var'] for r in runs], '.2e')}"
            )
        out.append("| " + " | ".join(cells) + " |")
    cross = result["cross_evaluation"]
    columns = list(next(iter(cross.values())))
    by_method: dict[str, list[dict[str, float]]] = {}
    for name, row in cross.items():
        by_method.setdefault(name.rsplit(" seed ", 1)[0], []).append(row)
    out += [
        "",
        f"Cross-evaluation (paper Table 3): each solution's loss under each objective; SAM: max over "
        f"the ρ = {s['rho']} ball by 5 projected ascent steps; TSAM: ε uniform in the ball of radius "
        f"{s['tsam_radius']} ({s['draws']} draws, the same for every solution).\n",
        "| solution | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method, rows in by_method.items():
        out.append(
            f"| {method} | " + " | ".join(_ms([r[c] for r in rows], ".4f") for c in columns) + " |"
        )
    return "\n".join(out) + "\n"
