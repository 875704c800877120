r"""Cross-evaluation (paper Table 3): score solutions under every objective.

For a model θ and a fixed data subset:

* ERM loss :math:`L(\theta)`;
* SAM loss :math:`\max_{\|\varepsilon\| \le \rho} L(\theta+\varepsilon)`, estimated from below by
  ``ascent_steps`` steps of normalised projected gradient ascent in the ρ-ball (the largest loss
  seen is reported; one step is SAM's own approximation);
* TSAM loss :math:`\frac1t\log\frac1n\sum_i e^{tL(\theta+\varepsilon_i)}` for each t, with
  ε_i uniform in the ball of radius ``tsam_radius`` (default 1, the noise radius TSAM trains
  with; a ρ = 0.05 ball of random directions barely moves the loss of a network with thousands
  of parameters), ``draws`` draws from ``seed``: the same directions for every
  solution (common random numbers), so differences between solutions are not noise.

The model is unchanged afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from tiltedsam.analysis._model_state import batch_weights, preserved, trainable
from tiltedsam.analysis.flatness import subset_loss
from tiltedsam.tilt import tilted_objective

LossFn = Callable[[Tensor, Tensor], Tensor]


def _loss_and_grad(model, loss_fn, batches, weights, params):
    total = 0.0
    grads = [torch.zeros_like(p) for p in params]
    for (x, y), w in zip(batches, weights, strict=True):
        with torch.enable_grad():  # works inside no_grad() too
            loss = loss_fn(model(x), y) * w
            step = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        for g, d in zip(grads, step, strict=True):
            g.add_(d)
        total += float(loss.detach())
    return total, grads


def sam_loss(model, loss_fn, batches, weights, rho: float, ascent_steps: int) -> float:
    params = trainable(model)
    theta = [p.detach().clone() for p in params]
    step = rho / ascent_steps
    best = -math.inf
    for _ in range(ascent_steps):
        loss, grads = _loss_and_grad(model, loss_fn, batches, weights, params)
        best = max(best, loss)
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads)) + 1e-12
        with torch.no_grad():
            eps = [p - t + step * g / norm for p, t, g in zip(params, theta, grads, strict=True)]
            eps_norm = math.sqrt(sum(float((e**2).sum()) for e in eps))
            shrink = min(1.0, rho / eps_norm) if eps_norm > 0 else 1.0
            for p, t, e in zip(params, theta, eps, strict=True):
                p.copy_(t + shrink * e)
    with torch.no_grad():
        best = max(best, subset_loss(model, loss_fn, batches, weights))
        for p, t in zip(params, theta, strict=True):
            p.copy_(t)
    return best


@torch.no_grad()
def perturbed_losses(model, loss_fn, batches, weights, rho: float, draws: int, seed: int) -> Tensor:
    """L(θ + ε_i) for ε_i uniform in the ρ-ball (seeded)."""
    params = trainable(model)
    theta = [p.detach().clone() for p in params]
    dim = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(draws):
        z = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
        radius = rho * float(torch.rand((), generator=gen, dtype=torch.float64)) ** (1 / dim)
        norm = math.sqrt(sum(float((v**2).sum()) for v in z))
        for p, t, v in zip(params, theta, z, strict=True):
            p.copy_(t + (radius / norm) * v.to(p))
        losses.append(subset_loss(model, loss_fn, batches, weights))
    for p, t in zip(params, theta, strict=True):
        p.copy_(t)
    return torch.tensor(losses, dtype=torch.float64)


def cross_evaluate(
    models: dict[str, nn.Module],
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    rho: float = 0.05,
    tsam_radius: float = 1.0,
    tilts: Sequence[float] = (1.0, 5.0, 20.0, 100.0),
    draws: int = 200,
    ascent_steps: int = 5,
    seed: int = 0,
    bn_mode: str = "eval",
) -> dict[str, dict[str, float]]:
    """``{solution name: {"ERM": ..., "SAM": ..., "TSAM t=1": ..., ...}}``."""
    batches, weights = batch_weights(batches)
    table: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        with preserved(model, bn_mode):
            row = {"ERM": subset_loss(model, loss_fn, batches, weights)}
            row["SAM"] = sam_loss(model, loss_fn, batches, weights, rho, ascent_steps)
            losses = perturbed_losses(model, loss_fn, batches, weights, tsam_radius, draws, seed)
            for t in tilts:
                row[f"TSAM t={t:g}"] = float(tilted_objective(losses, t))
        table[name] = row
    return table
