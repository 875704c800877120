"""Run analysis code on a model and leave its parameters, buffers and train/eval mode as they were."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from tiltedsam._norm_layers import norm_layers

BN_MODES = ("eval", "train")


@contextlib.contextmanager
def preserved(model: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """Put ``model`` in eval mode, its BatchNorm layers in ``mode`` ("eval" or "train"); restore
    parameters, buffers and modes after.

    ``mode="train"`` makes BatchNorm use batch statistics; the running statistics it updates
    are written back on exit, so the analysis has no side effect on the model.  Every other
    module stays in eval mode: dropout in train mode would make the loss random (a Hessian-vector
    product that is not symmetric, noise in every flatness number, the global RNG consumed).
    """
    if mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {mode!r}")
    modes = [(m, m.training) for m in model.modules()]
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    model.eval()
    if mode == "train":
        for module in norm_layers(model, tracking_only=False):
            module.train()
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, value in model.state_dict(keep_vars=True).items():
                value.copy_(saved[name])
        for module, was_training in modes:
            module.training = was_training


def trainable(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def batch_weights(
    batches: Iterable[tuple[Tensor, Tensor]],
) -> tuple[list[tuple[Tensor, Tensor]], list[float]]:
    """Materialise batches and their weights n_b / N, so the weighted sum of batch means is the
    mean over the whole subset (splitting it into batches then does not change any result)."""
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: pass at least one (inputs, targets) batch")
    sizes = [len(y) for _, y in batches]
    total = sum(sizes)
    return batches, [n / total for n in sizes]


SUBSET_DRAWS = ("random", "first")


def training_subset(n: int, size: int, seed: int = 0, draw: str = "random") -> Tensor:
    """Indices of the ``size`` training examples (of ``n``) that flatness is measured on.

    ``"random"``: a fixed-seed random sample, sorted.  ``"first"``, the first ``size``, is only
    right when the data are not stored in label order; CIFAR-10's are (classes 0-4 would be the
    whole subset of half its training set), so it is kept for reading older measurements."""
    if draw not in SUBSET_DRAWS:
        raise ValueError(f"subset_draw must be one of {SUBSET_DRAWS}, got {draw!r}")
    size = min(int(size), n)
    if draw == "first":
        return torch.arange(size)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=generator)[:size].sort().values
