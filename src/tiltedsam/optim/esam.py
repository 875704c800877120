r"""ESAM2: SAM with several ascent radii, stepping with the gradient at the worst one.

The TSAM paper's "expansive SAM" baseline (Li et al., ICLR 2025, Section 5.1, ESAM2): with
:math:`g_0 = \nabla L(\theta)` and :math:`u = g_0/\|g_0\|`, evaluate
:math:`L_k = L(\theta + \rho_k u)` for every radius :math:`\rho_k`, and step with
:math:`\nabla L(\theta + \rho_{k^*} u)`, :math:`k^* = \arg\max_k L_k` (ties: the mean of the tied
gradients).  Passes per step: 1 + len(rhos).  The running argmax is the t = ∞ case of the
streaming tilted accumulator, so only one candidate gradient is held at a time.

Departure: the paper gives no radii; the default (0.5ρ, ρ, 2ρ) around SAM's ρ = 0.05 is ours.
``step`` returns the largest candidate loss :math:`\max_k L_k`.

ESAM1 (SAM run for more steps at TSAM's budget) is not an optimizer but a budget rule of the
harness: see ``tiltedsam.optim.registry`` (``MethodInfo.budget``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_nonnegative
from tiltedsam.optim.base import Closure, PerturbationOptimizer
from tiltedsam.tilt import TiltedAccumulator


class ESAM2(PerturbationOptimizer):
    """SAM over a list of ascent radii ``rhos``; the step uses the highest-loss candidate."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rhos: Sequence[float] = (0.025, 0.05, 0.1),
        *,
        model: nn.Module | None = None,
        bn_update: str = "first",
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        if isinstance(rhos, (int, float)) or len(rhos) == 0:
            raise ValueError(f"rhos must be a non-empty sequence of radii >= 0, got {rhos!r}")
        self.rhos = tuple(check_nonnegative(f"rhos[{i}]", r) for i, r in enumerate(rhos))
        super().__init__(
            params, base_optimizer_cls, {}, model=model, bn_update=bn_update,
            nonfinite=nonfinite, seed=0, **base_kwargs,
        )  # fmt: skip

    @property
    def passes_per_step(self) -> int:
        return 1 + len(self.rhos)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        closure = self._require_closure(closure)
        ctx = self._begin_step()
        ctx.evaluate(closure)
        direction = ctx.buffer("direction")  # u = g0/‖g0‖
        torch._foreach_copy_(direction, ctx.grads())
        torch._foreach_mul_(direction, 1.0 / (global_norm(direction) + 1e-12))
        worst = TiltedAccumulator(math.inf, buffers=ctx.buffer("worst_grad"))
        for rho in self.rhos:  # θ + ρ_k u; keep the gradient of the largest loss
            torch._foreach_add_(ctx.params, direction, alpha=rho)
            worst.add(ctx.evaluate(closure), ctx.grads())
            ctx.restore()
        losses = worst.stacked_losses()
        took = self._finish_step(worst.result(), losses)
        # The weights of the candidates: the worst one (ties share), the t = ∞ tilt.
        return self._diagnose(losses, losses.max(), took, weight_tilt=math.inf)

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [("rhos", self.rhos)]
