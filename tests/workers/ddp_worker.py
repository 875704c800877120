"""Run under ``torchrun --nproc_per_node=2``: TSAM and SAM across 2 gloo ranks on CPU.

Writes ``rank{r}.pt`` into the directory given as argv[1] with the parameters after each
scenario and the number of all-reduce calls it made.
"""

import gc
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tiltedsam import SAM, TSAM


def make_data(n=32, d=5, k=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(
        0, k, (n,), generator=g
    )


def make_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(
        torch.float64
    )


def closure_for(model, x, y):
    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    calls = {"n": 0}
    real = dist.all_reduce

    def counting_all_reduce(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    dist.all_reduce = counting_all_reduce
    x, y = make_data()
    local = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    result = {}
    scenarios = {
        # The model seed differs per rank on purpose: the optimizer broadcasts rank 0's params.
        "tsam_global": lambda p: TSAM(p, torch.optim.SGD, tilt=5, num_samples=3, lr=0.1,
                                      momentum=0.9, seed=7),  # distributed="auto"
        "sam_global": lambda p: SAM(p, torch.optim.SGD, rho=0.1, lr=0.1, distributed="global"),
        "tsam_per_rank": lambda p: TSAM(p, torch.optim.SGD, tilt=5, num_samples=3, lr=0.1,
                                        momentum=0.9, seed=7, distributed="per_rank"),
    }  # fmt: skip
    for name, factory in scenarios.items():
        model = make_model(seed=rank)
        opt = factory(model.parameters())
        calls["n"] = 0
        opt.step(closure_for(model, x[local], y[local]))  # first step: +2 settings check
        first = calls["n"]
        calls["n"] = 0
        for _ in range(2):
            opt.step(closure_for(model, x[local], y[local]))
        result[name] = {
            "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
            "first_step_all_reduces": first,
            "all_reduces_per_step": calls["n"] / 2,
            "passes_per_step": opt.passes_per_step,
            "generator_state": opt.generator.get_state(),
        }
    try:
        model = make_model(0)
        opt = TSAM(model.parameters(), torch.optim.SGD, num_samples=3 + rank, lr=0.1)
        opt.step(closure_for(model, x[local], y[local]))
        result["mismatch_error"] = None
    except ValueError as error:
        result["mismatch_error"] = str(error)
    torch.save(result, out / f"rank{rank}.pt")
    dist.barrier()  # both ranks done before gloo tears down (an early teardown can abort)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    gc.collect()  # see examples/ddp_tsam.py: nothing left for shutdown to free under gloo
