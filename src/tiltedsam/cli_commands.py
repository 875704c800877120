"""The handlers of ``tiltedsam``'s commands: each takes the parsed arguments, runs the command
and prints what it wrote (:mod:`tiltedsam.cli` builds the parser and dispatches)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tiltedsam._files import write_atomic
from tiltedsam.cli_options import config_from_args
from tiltedsam.experiments.configs import DataConfig, GlueConfig, TrainConfig


def compare(args: argparse.Namespace) -> None:
    from tiltedsam.experiments.compare import compare as run_compare

    data = config_from_args(DataConfig, args)
    run_compare(args.methods, seeds=args.seeds, config=config_from_args(TrainConfig, args),
            dataset=data.dataset, data_path=data.data_path, out=args.out,
            progress=not args.no_progress, rerun=args.rerun, label_noise=data.label_noise,
            val_size=data.val_size, train_subset=data.train_subset, device=args.device)  # fmt: skip
    print((Path(args.out) / "summary.md").read_text())
    print(f"Wrote {args.out}/summary.md, results.csv, metrics.csv, accuracy.png")


def sweep(args: argparse.Namespace) -> None:
    from tiltedsam.experiments.sweep import sweep as run_sweep

    data = config_from_args(DataConfig, args)
    run_sweep(args.grid, seeds=args.seeds, config=config_from_args(TrainConfig, args),
          dataset=data.dataset, data_path=data.data_path, label_noise=data.label_noise,
          val_size=data.val_size, train_subset=data.train_subset, out=args.out,
          workers=args.workers, select_seeds=args.select_seeds, executor=args.executor,
          device=args.device, search=args.search, trials=args.trials,
          log=lambda line: print(line, flush=True), address=args.ray_address,
          cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
          max_retries=args.max_retries)  # fmt: skip
    print(Path(args.out, "report.md").read_text())


def study(args: argparse.Namespace) -> None:
    import torch

    from tiltedsam.experiments.study import Study, load_study_config

    config = load_study_config(args.study_config)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs/study") / Path(args.study_config).stem
    Study(config, out, log=lambda line: print(line, flush=True)).execute()
    print(f"study {config.name!r} finished: {out}/study.json")


def glue(args: argparse.Namespace) -> None:
    from tiltedsam.experiments.glue import glue_sweep

    config = config_from_args(GlueConfig, args)
    glue_sweep(args.grid, config=config, seeds=args.seeds, select_seeds=args.select_seeds,
               out=args.out, data_path=args.data_path, encoder_path=args.encoder,
               progress=not args.no_progress, lr_from_erm=args.lr_from_erm)  # fmt: skip
    print(Path(args.out, "report.md").read_text())


def report(args: argparse.Namespace) -> None:
    from tiltedsam.experiments.glue_report import glue_summary, write_glue_report
    from tiltedsam.experiments.report import write_sweep_report

    glue = [Path(root, "glue.json").exists() for root in args.root]
    if len(args.root) > 1 and all(glue):
        print(glue_summary(args.root))
    for root, is_glue in zip(args.root, glue, strict=True):
        print(write_glue_report(root) if is_glue else write_sweep_report(root))


def analyze(args: argparse.Namespace) -> None:
    from tiltedsam.analysis.runs import analyze_runs, data_of_runs, selected_labels

    labels = None
    if args.selected:
        labels = selected_labels(args.root, args.methods)
    elif args.methods:
        labels = [
            r["method"] for r in _results_of(args.root) if r["config"]["method"] in args.methods
        ]
    analyze_runs(args.root, data_of_runs(args.root, args.data_path, labels=labels), subset=args.subset, draws=args.draws,
                 deltas=args.deltas, rho=args.rho, tsam_radius=args.tsam_radius,
                 seed=args.seed, labels=labels)  # fmt: skip
    print(Path(args.root, "analysis.md").read_text())


def _results_of(root: str):
    from tiltedsam.experiments.report import load_results

    return load_results(Path(root))


def toy(args: argparse.Namespace) -> None:
    from tiltedsam.analysis.toy_figures import figure1, figure5_6

    out = Path(args.out)
    finals = figure1(out / "toy_fig1.png", steps=args.steps)
    minima = figure5_6(out / "toy_fig5.png", out / "toy_fig6.png")
    lines = ["| run | final θ |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in finals.items()]
    lines += ["", "| objective | argmin θ on the grid |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in minima.items()]
    write_atomic(out / "toy.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def glm(args: argparse.Namespace) -> None:
    from tiltedsam.analysis.glm import glm_flatness_vs_tilt, plot_points, points_table
    from tiltedsam.data import load_mnist1d

    data = load_mnist1d()
    points = glm_flatness_vs_tilt(data.x_train, data.y_train, data.x_test, data.y_test,
                                  tilts=args.tilts, sigma=args.sigma, draws=args.draws,
                                  seed=args.seed)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = points_table(points)
    write_atomic(out / "glm.md", table)
    plot_points(points, out / "glm.png")
    print(table)


def _batch_sizes(text: str | None, models: list[str]) -> dict[str, int]:
    if not text:
        return {}
    try:
        if "=" not in text:
            return {m: int(text) for m in models}
        return {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise ValueError(f"--batch-size must be N or model=N,..., got {text!r}") from None


def bench(args: argparse.Namespace) -> None:
    import json

    from tiltedsam.bench import (
        markdown,
        plot_scaling,
        run_bench,
        scaling_markdown,
        scaling_vs_params,
        scaling_vs_s,
    )

    if args.repeats < 1 or any(s < 1 for s in args.samples):
        raise ValueError("--repeats and every --samples value must be >= 1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = run_bench(() if args.scaling_only else args.models, args.samples, args.methods,
                       repeats=args.repeats, warmup=args.warmup,
                       batch_sizes=_batch_sizes(args.batch_size, args.models),
                       threads=args.threads or None, device=args.device,
                       memory=not args.no_memory, heap="kept" if args.keep_heap else "default",
                       log=log)  # fmt: skip
    text = "" if args.scaling_only else markdown(result)
    extra: dict = {}
    if args.scaling or args.scaling_only:
        log(f"scaling: {args.scaling_model}, s in {args.scaling_samples}")
        vs_s = scaling_vs_s(args.scaling_model, args.scaling_samples, repeats=args.repeats,
                            device=args.device)  # fmt: skip
        log(f"scaling: MLP widths {args.widths}")
        vs_params = scaling_vs_params(args.widths, repeats=args.repeats, device=args.device)
        paths = plot_scaling(vs_s, vs_params, Path(args.plot_dir))
        extra = {"scaling_vs_s": vs_s, "scaling_vs_params": vs_params}
        text += "\n" + scaling_markdown(vs_s, vs_params)
        text += "\n".join(f"Wrote {p}" for p in paths) + "\n"
    print(text, end="")
    if args.markdown:
        write_atomic(args.markdown, text)
    if args.json:
        payload = json.loads(result.to_json())
        payload.update(extra)
        write_atomic(args.json, json.dumps(payload, indent=1))


HANDLERS = {"compare": compare, "sweep": sweep, "study": study, "glue": glue, "report": report,
            "analyze": analyze, "toy": toy, "glm": glm, "bench": bench}  # fmt: skip
