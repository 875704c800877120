"""Our TSAM step against a loop with the official implementation's semantics, side by side.

    python benchmarks/official_tsam.py [--models mlp,cnn1d,resnet8] [--samples 1,3,5] [--repeats 30]

The reference loop (s stored gradient copies, a host read per parameter tensor and per sample,
BatchNorm statistics updated in every sample) is ``tiltedsam.bench.reference.OfficialTSAMReference``
(in the package, so that ``tiltedsam bench`` can run it from an installed copy too); its
docstring lists what it reproduces.  This script times ERM, our TSAM and the reference in
interleaved rounds and prints step-time ratios and the peak tensor memory against s; the same
numbers come out of ``tiltedsam bench --methods erm,tsam,official``.
"""

from __future__ import annotations

import argparse

from tiltedsam.bench import markdown, run_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn1d,resnet8")
    parser.add_argument("--samples", default="1,3,5")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = run_bench(
        args.models.split(","),
        [int(s) for s in args.samples.split(",")],
        ("erm", "tsam", "official"),
        repeats=args.repeats,
        threads=args.threads,
        device=args.device,
        log=print,
    )
    print(markdown(result))


if __name__ == "__main__":
    main()
