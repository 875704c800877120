r"""Flatness around a solution θ*: the loss under random parameter noise (paper Fig. 2).

For each noise scale δ, draw ε ~ N(0, δ²I) over the trainable parameters (``draws`` times,
seeded) and record :math:`L(\theta^*+\varepsilon)` on a fixed data subset.  Reported per δ: the mean
and variance of those losses (the paper's average-loss sharpness), and for each tilt t the
tilted objective :math:`\frac1t\log\frac1n\sum e^{tL}`, the t-weighted mean and the t-weighted
variance (paper Def. 1–3), all from the same draws.  The clean loss :math:`L(\theta^*)` is reported
too.  The model is unchanged afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tiltedsam.analysis._model_state import batch_weights, preserved, trainable
from tiltedsam.tilt import tilted_mean, tilted_objective, tilted_variance

LossFn = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def subset_loss(
    model: nn.Module, loss_fn: LossFn, batches: list[tuple[Tensor, Tensor]], weights: list[float]
) -> float:
    """Batch-size-weighted mean loss over the subset (no grad)."""
    return float(sum(w * loss_fn(model(x), y) for (x, y), w in zip(batches, weights, strict=True)))


@dataclass
class FlatnessAtScale:
    delta: float
    mean: float
    variance: float
    tilted: dict[float, dict[str, float]] = field(default_factory=dict)


@dataclass
class FlatnessReport:
    clean_loss: float
    draws: int
    num_examples: int
    seed: int
    scales: list[FlatnessAtScale]


@torch.no_grad()
def noise_flatness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    deltas: Sequence[float] = (0.001, 0.005, 0.01, 0.02),
    *,
    draws: int = 500,
    tilts: Sequence[float] = (1.0, 5.0, 20.0),
    seed: int = 0,
    bn_mode: str = "eval",
) -> FlatnessReport:
    """Mean/variance (and tilted statistics) of the loss under N(0, δ²) parameter noise."""
    if draws < 2:
        raise ValueError(f"draws must be an int >= 2, got {draws}")
    if any(d < 0 for d in deltas):
        raise ValueError(f"deltas must be >= 0, got {list(deltas)}")
    batches, weights = batch_weights(batches)
    gen = torch.Generator().manual_seed(seed)
    scales = []
    with preserved(model, bn_mode):
        params = trainable(model)
        theta = [p.detach().clone() for p in params]
        clean = subset_loss(model, loss_fn, batches, weights)
        for delta in deltas:
            losses = []
            for _ in range(draws):
                for p, t in zip(params, theta, strict=True):
                    noise = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
                    p.copy_(t + delta * noise)
                losses.append(subset_loss(model, loss_fn, batches, weights))
            values = torch.tensor(losses, dtype=torch.float64)
            at_scale = FlatnessAtScale(
                float(delta), float(values.mean()), float(values.var(unbiased=True))
            )
            for t in tilts:
                at_scale.tilted[float(t)] = {
                    "objective": float(tilted_objective(values, t)),
                    "mean": float(tilted_mean(values, t)),
                    "variance": float(tilted_variance(values, t)),
                }
            scales.append(at_scale)
    return FlatnessReport(clean, draws, sum(len(y) for _, y in batches), seed, scales)
