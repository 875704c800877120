"""Command line: ``tiltedsam compare`` (more subcommands land with later issues)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tiltedsam.experiments.train import TrainConfig


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated ints, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiltedsam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser(
        "compare",
        help="train ERM / SAM / TSAM (or any method specs) and write a table and plots",
        description="Method specs look like erm, sam:rho=0.1, tsam:tilt=20,num_samples=5, "
        "esam2:rhos=0.025/0.05/0.1; 'all' runs every registered method with its defaults.",
    )
    cmp.add_argument("--methods", nargs="+", default=["erm", "sam", "tsam"])
    cmp.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated, e.g. 0,1,2")
    cmp.add_argument("--dataset", default="mnist1d", choices=["mnist1d"])
    cmp.add_argument("--data-path", default=None, help="cache file (.npz) for the generated data")
    cmp.add_argument("--model", default="cnn1d", choices=["cnn1d", "mlp"])
    cmp.add_argument("--epochs", type=int, default=40)
    cmp.add_argument("--batch-size", type=int, default=64)
    cmp.add_argument("--lr", type=float, default=0.1)
    cmp.add_argument("--momentum", type=float, default=0.9)
    cmp.add_argument("--weight-decay", type=float, default=5e-4)
    cmp.add_argument("--label-smoothing", type=float, default=0.0)
    cmp.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"])
    cmp.add_argument("--out", default="runs/compare", help="output directory")
    cmp.add_argument("--rerun", action="store_true", help="train again even if finished")
    cmp.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        from tiltedsam.experiments.compare import compare

        try:
            config = TrainConfig(
                model=args.model,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                momentum=args.momentum,
                weight_decay=args.weight_decay,
                label_smoothing=args.label_smoothing,
                lr_schedule=args.lr_schedule,
            )
            compare(
                args.methods,
                seeds=args.seeds,
                config=config,
                dataset=args.dataset,
                data_path=args.data_path,
                out=args.out,
                progress=not args.no_progress,
                rerun=args.rerun,
            )
        except (ValueError, TypeError, FileNotFoundError) as err:
            print(f"tiltedsam compare: error: {err}", file=sys.stderr)
            return 2
        print((__import__("pathlib").Path(args.out) / "summary.md").read_text())
        print(f"Wrote {args.out}/summary.md, results.csv, metrics.csv, accuracy.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
