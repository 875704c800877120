"""CPU time of the N(0, I) noise draw TSAM makes per sample, per model of ``tiltedsam bench``.

    OMP_NUM_THREADS=1 python benchmarks/noise_draw.py

One ``normal_`` per parameter tensor from a seeded ``torch.Generator``, as
``tiltedsam.samplers.draw_noise`` does; thread CPU time, mean over many draws after a warm-up.
"""

from __future__ import annotations

import time

import torch

from tiltedsam.bench.cases import BENCH_MODELS
from tiltedsam.models import create_model


def draw_time(name: str, repeats: int | None = None) -> tuple[int, float]:
    """(number of parameters, seconds per draw of all of them)."""
    shape, _ = BENCH_MODELS[name]
    params = [p.detach().clone() for p in create_model(name, shape, 10).parameters()]
    count = sum(p.numel() for p in params)
    generator = torch.Generator().manual_seed(0)
    repeats = repeats or (2000 if count < 100_000 else 100)
    for _ in range(20):
        for p in params:
            p.normal_(generator=generator)
    start = time.thread_time()
    for _ in range(repeats):
        for p in params:
            p.normal_(generator=generator)
    return count, (time.thread_time() - start) / repeats


def main() -> None:
    torch.set_num_threads(1)
    print("| model | parameters | µs per draw | ns per parameter |\n|---|---|---|---|")
    for name in ("mlp", "cnn1d", "resnet8"):
        count, seconds = draw_time(name)
        print(f"| {name} | {count:,} | {seconds * 1e6:.1f} | {seconds / count * 1e9:.2f} |")


if __name__ == "__main__":
    main()
