"""Step cost of SAM and TSAM relative to their pass floor, measured side by side in one run.

    python benchmarks/step_overhead.py [--repeats 30]

Kept for its old name: it runs ``tiltedsam bench --methods erm,sam,tsam --no-memory`` on the
MLP, the MNIST-1D CNN and ResNet-8 (see ``tiltedsam.bench.runner`` for the method: interleaved
rounds, medians of wall and CPU time, ``TSAM / (2s·ERM)`` with 1.0 meaning no overhead beyond
the passes).
"""

from __future__ import annotations

import argparse

from tiltedsam.bench import markdown, run_bench


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    result = run_bench(("mlp", "cnn1d", "resnet8"), (1, 3, 5), ("erm", "sam", "tsam"),
                       repeats=args.repeats, memory=False, log=print)  # fmt: skip
    print(markdown(result))


if __name__ == "__main__":
    main()
