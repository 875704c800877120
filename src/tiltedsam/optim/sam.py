r"""SAM and ASAM.

SAM (Foret et al., ICLR 2021, "Sharpness-Aware Minimization for Efficiently Improving
Generalization"): with :math:`g_0 = \nabla L(\theta)`,

.. math:: \varepsilon = \rho\, g_0/\|g_0\|, \qquad \theta \leftarrow \mathrm{base}(\theta, \nabla L(\theta+\varepsilon)).

ASAM (Kwon et al., ICML 2021, ``adaptive=True``): the ascent is taken in the metric
:math:`T = |\theta|`: :math:`\varepsilon = \rho\, T^2 g_0 / \|T g_0\|` (as in davda54/sam).

Two passes per step; the first one (at θ) updates BatchNorm statistics when ``model=`` is given.
``step`` returns the loss of that first pass, :math:`L(\theta)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_nonnegative
from tiltedsam.optim.base import Closure, PerturbationOptimizer
from tiltedsam.optim.groups import option_checks


class SAM(PerturbationOptimizer):
    """Sharpness-Aware Minimization around any ``torch.optim`` optimizer.

    Example::

        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

        def closure():
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        *,
        model: nn.Module | None = None,
        bn_update: str = "first",
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        rho = check_nonnegative("rho", rho)
        super().__init__(
            params,
            base_optimizer_cls,
            {"rho": rho, "adaptive": bool(adaptive)},
            model=model,
            bn_update=bn_update,
            nonfinite=nonfinite,
            seed=0,
            **base_kwargs,
        )

    passes_per_step = 2
    group_checks = option_checks(rho=check_nonnegative)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """Two passes: at θ, then at θ + ε; one base step with the second gradient."""
        closure = self._require_closure(closure)
        ctx = self._begin_step()
        loss = ctx.evaluate(closure)
        scaled: list[Tensor] = []  # g (ASAM: T g, T = |θ|)
        for group, ps, block in ctx.blocks(ctx.grads()):
            if group["adaptive"]:
                block = torch._foreach_mul(block, torch._foreach_abs(ps))
            scaled.extend(block)
        norm = global_norm(scaled)
        for group, ps, block in ctx.blocks(scaled):  # θ + ρ g/‖g‖ (ASAM: θ + ρ T² g/‖T g‖)
            if group["adaptive"]:
                block = torch._foreach_mul(block, torch._foreach_abs(ps))
            torch._foreach_mul_(block, group["rho"] / (norm + 1e-12))
            torch._foreach_add_(ps, block)
        second = ctx.evaluate(closure)
        ctx.restore()
        self._finish_step(ctx.grads(), torch.stack([loss, second]))
        return loss

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [("rho", self.defaults["rho"]), ("adaptive", self.defaults["adaptive"])]
