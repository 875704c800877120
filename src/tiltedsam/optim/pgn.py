r"""PGN: penalising the gradient norm (Zhao, Zhang, Hu; ICML 2022).

With :math:`g_0 = \nabla L(\theta)`,

.. math:: g = (1-\alpha)\, g_0 + \alpha\, \nabla L\big(\theta + r\, g_0/\|g_0\|\big),

the finite-difference form of the gradient of :math:`L + \lambda\|\nabla L\|` (α = λ/r);
α = 1 is SAM.  It is computed as :math:`g_0 + \alpha(g_1 - g_0)`, which is the same number
mathematically and gives :math:`g_0` bit for bit when r = 0.  Two passes per step; ``step``
returns :math:`L(\theta)`.  The TSAM paper tunes α ∈ {0.3, 0.5, 0.7, 0.9}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_nonnegative, check_unit_interval
from tiltedsam.optim.base import Closure, PerturbationOptimizer
from tiltedsam.optim.groups import option_checks


class PGN(PerturbationOptimizer):
    """Gradient-norm penalty: interpolate the gradient at θ and at the SAM point θ + r·ĝ."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float = 0.05,
        alpha: float = 0.5,
        *,
        model: nn.Module | None = None,
        bn_update: str = "first",
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        defaults = {
            "rho": check_nonnegative("rho", rho),
            "alpha": check_unit_interval("alpha", alpha),
        }
        super().__init__(
            params, base_optimizer_cls, defaults, model=model, bn_update=bn_update,
            nonfinite=nonfinite, seed=0, **base_kwargs,
        )  # fmt: skip

    passes_per_step = 2
    group_checks = option_checks(rho=check_nonnegative, alpha=check_unit_interval)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        closure = self._require_closure(closure)
        ctx = self._begin_step()
        loss = ctx.evaluate(closure)
        g0 = ctx.buffer("g0")
        torch._foreach_copy_(g0, ctx.grads())
        scale = 1.0 / (global_norm(g0) + 1e-12)
        for group, ps, block in ctx.blocks(g0):  # θ + r g0/‖g0‖
            torch._foreach_add_(ps, torch._foreach_mul(block, scale * group["rho"]))
        second = ctx.evaluate(closure)
        ctx.restore()
        g1 = ctx.grads()
        torch._foreach_sub_(g1, g0)  # g0 + α (g1 − g0)
        pairs = zip(ctx.blocks(g1), ctx.blocks(g0), strict=True)
        for (group, _, block), (_, _, g0_block) in pairs:
            torch._foreach_mul_(block, group["alpha"])
            torch._foreach_add_(block, g0_block)
        losses = torch.stack([loss, second])
        took = self._finish_step(g1, losses)
        return self._diagnose(losses[1:], loss, took)

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [("rho", self.defaults["rho"]), ("alpha", self.defaults["alpha"])]
