r"""R-SAM: random sharpness-aware minimisation (Liu, Mai, Cheng, Chen, Hsieh, You; NeurIPS 2022,
"Random Sharpness-Aware Minimization"; official code RSAM-Optimizer/R-SAM, ``vit_jax/train.py``).

One step, as in the official code:

1. a filter-wise random perturbation: for a weight with ndim > 1,
   :math:`\delta = \sigma\, z \odot \|W_j\|` with z ~ N(0, I) and :math:`\|W_j\|` the norm of
   output unit j (PyTorch: dim 0; the norm over all other dims); for a 1-D tensor
   :math:`\delta = \sigma\, z\, \|p\|`;
2. :math:`g_\delta = \nabla L(\theta + \delta)`;
3. :math:`v = \lambda g_\delta + \delta`, :math:`\varepsilon = \rho\, v/\|v\|` (global norm);
4. step with :math:`\nabla L(\theta + \varepsilon)` (from θ: δ is not kept).

Two passes per step; ``step`` returns :math:`L(\theta + \delta)`.

Departures: the official code fixes λ = 2 and schedules σ from 5e-4 to 2.5e-3 (cosine) and ρ
with the learning rate; here ``lam`` (default 2), ``sigma`` (default 1e-3) and ``rho`` are
constants a user may schedule through the param groups.  The official code reuses one random key
for every tensor; here each tensor gets fresh noise.  SPEC.md lists 3 passes; the official code
(and this one) needs 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._validation import check_nonnegative
from tiltedsam.optim.base import Closure, PerturbationOptimizer
from tiltedsam.optim.groups import option_checks
from tiltedsam.samplers import ascend


def filter_norms(p: Tensor) -> Tensor:
    """Norm of each output unit (dim 0) broadcastable to ``p``; the whole norm for 1-D tensors."""
    if p.ndim <= 1:
        return torch.linalg.vector_norm(p)
    return torch.linalg.vector_norm(p, dim=tuple(range(1, p.ndim)), keepdim=True)


class RSAM(PerturbationOptimizer):
    """Random filter-wise perturbation, then a SAM ascent along λ·g_δ + δ."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float = 0.05,
        sigma: float = 1e-3,
        lam: float = 2.0,
        *,
        model: nn.Module | None = None,
        bn_update: str = "first",
        nonfinite: str = "raise",
        seed: int | None = None,
        **base_kwargs: Any,
    ) -> None:
        defaults = {
            "rho": check_nonnegative("rho", rho),
            "sigma": check_nonnegative("sigma", sigma),
            "lam": check_nonnegative("lam", lam),
        }
        super().__init__(
            params, base_optimizer_cls, defaults, model=model, bn_update=bn_update,
            nonfinite=nonfinite, seed=seed, **base_kwargs,
        )  # fmt: skip

    passes_per_step = 2
    group_checks = option_checks(
        rho=check_nonnegative, sigma=check_nonnegative, lam=check_nonnegative
    )

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        closure = self._require_closure(closure)
        ctx = self._begin_step()
        delta = ctx.buffer("delta")  # δ = σ z ⊙ ‖W_j‖, filter-wise
        for group, ps, block in ctx.blocks(delta):
            for p, d in zip(ps, block, strict=True):
                d.normal_(generator=ctx.generator).mul_(filter_norms(p) * group["sigma"])
        torch._foreach_add_(ctx.params, delta)
        loss = ctx.evaluate(closure)
        ctx.restore()
        direction = ctx.grads()  # v = λ g_δ + δ
        pairs = zip(ctx.blocks(direction), ctx.blocks(delta), strict=True)
        for (group, _, block), (_, _, delta_block) in pairs:
            torch._foreach_mul_(block, group["lam"])
            torch._foreach_add_(block, delta_block)
        ascend(ctx, direction, "rho")  # θ + ρ v/‖v‖
        second = ctx.evaluate(closure)
        ctx.restore()
        losses = torch.stack([loss, second])
        took = self._finish_step(ctx.grads(), losses)
        return self._diagnose(losses[1:], loss, took)

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [(k, self.defaults[k]) for k in ("rho", "sigma", "lam")]
