"""Step cost of SAM and TSAM relative to their pass floor, measured side by side in one run.

    python benchmarks/step_overhead.py [--repeats 200]

For each model, times ERM (1 forward+backward), SAM (2 passes) and TSAM with the ascent sampler
(2·s passes) on the same batch, interleaved round-robin so machine noise hits all alike, and
prints ``TSAM time / (2·s · ERM time)``: 1.0 means no overhead beyond the passes themselves.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from tiltedsam import SAM, TSAM
from tiltedsam.models import CNN1D, MLP


def make_step(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: int = 3):
    loss_fn = nn.CrossEntropyLoss()

    def closure():
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    if kind == "erm":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            opt.step(closure)

        return step
    if kind == "sam":
        opt = SAM(model.parameters(), torch.optim.SGD, lr=0.01, momentum=0.9)
    else:
        opt = TSAM(model.parameters(), torch.optim.SGD, tilt=1.0, num_samples=s, lr=0.01,
                   momentum=0.9)  # fmt: skip
    return lambda: opt.step(closure)


def bench(name: str, model_fn, x, y, repeats: int, samples: tuple[int, ...]) -> None:
    kinds = ["erm", "sam", *[f"tsam{s}" for s in samples]]
    steps = {}
    for kind in kinds:
        torch.manual_seed(0)
        model = model_fn()
        s = int(kind[4:]) if kind.startswith("tsam") else 3
        steps[kind] = make_step("tsam" if kind.startswith("tsam") else kind, model, x, y, s)
        for _ in range(10):
            steps[kind]()
    times = {k: [] for k in kinds}
    for _ in range(repeats):
        for kind in kinds:
            start = time.perf_counter()
            steps[kind]()
            times[kind].append(time.perf_counter() - start)
    erm = statistics.median(times["erm"])
    print(f"\n{name}: batch {len(x)}, median of {repeats} steps")
    print("| method | passes | ms/step | ms/step / (passes × ERM) |")
    print("|---|---|---|---|")
    for kind in kinds:
        passes = 1 if kind == "erm" else 2 if kind == "sam" else 2 * int(kind[4:])
        med = statistics.median(times[kind])
        print(f"| {kind} | {passes} | {1e3 * med:.2f} | {med / (passes * erm):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    x1d, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench("MNIST-1D CNN (25 channels)", CNN1D, x1d, y, args.repeats, (1, 3, 5))
    bench("MLP 40-100-100-10", MLP, x1d, y, args.repeats, (1, 3, 5))


if __name__ == "__main__":
    main()
