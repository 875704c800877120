r"""SAM and ASAM.

SAM (Foret et al., ICLR 2021, "Sharpness-Aware Minimization for Efficiently Improving
Generalization"): with :math:`g_0 = \nabla L(\theta)`,

.. math:: \varepsilon = \rho\, g_0/\|g_0\|, \qquad \theta \leftarrow \mathrm{base}(\theta, \nabla L(\theta+\varepsilon)).

ASAM (Kwon et al., ICML 2021, ``adaptive=True``): the ascent is taken in the metric
:math:`T = |\theta|`: :math:`\varepsilon = \rho\, T^2 g_0 / \|T g_0\|` (as in davda54/sam).

Two passes per step; the first one (at θ) updates BatchNorm statistics when ``model=`` is given.
``step`` returns the loss of that first pass, :math:`L(\theta)`.

Two-phase API (davda54/sam, pytorch_optimizer): ``first_step()`` after the caller's backward at
θ moves to θ + ε; ``second_step()`` after the backward at θ + ε restores θ and steps.  Both run
the same code as ``step(closure)`` (the same update, bit for bit) and the same end-of-step
policies; the migration snippet is in ``docs/usage.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_bool, check_nonnegative
from tiltedsam.optim.base import Closure, PerturbationOptimizer
from tiltedsam.optim.context import StepContext, checked_loss
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

    or, as in davda54/sam, ``loss_fn(model(x), y).backward(); opt.first_step(zero_grad=True);
    loss_fn(model(x), y).backward(); opt.second_step(zero_grad=True)``.
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
            {"rho": rho, "adaptive": check_bool("adaptive", adaptive)},
            model=model,
            bn_update=bn_update,
            nonfinite=nonfinite,
            seed=0,
            **base_kwargs,
        )
        self._first_loss: Tensor | None = None
        self._between = False  # first_step done, second_step not yet

    passes_per_step = 2
    group_checks = option_checks(rho=check_nonnegative, adaptive=check_bool)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """Two passes: at θ, then at θ + ε; one base step with the second gradient."""
        closure = self._require_closure(closure)
        self._check_phase(False, "step(closure)")
        ctx = self._begin_step()
        loss = ctx.evaluate(closure)
        self._ascend(ctx)
        second = ctx.evaluate(closure)
        ctx.restore()
        losses = torch.stack([loss, second])
        took = self._finish_step(ctx.grads(), losses)
        return self._diagnose(losses[1:], loss, took)

    @torch.no_grad()
    def _ascend(self, ctx: StepContext) -> None:
        """θ ← θ + ρ g/‖g‖ (ASAM: θ + ρ T² g/‖T g‖, T = |θ|), g the gradient in ``p.grad``."""
        scaled: list[Tensor] = []  # g (ASAM: T g)
        for group, ps, block in ctx.blocks(ctx.grads()):
            if group["adaptive"]:
                block = torch._foreach_mul(block, torch._foreach_abs(ps))
            scaled.extend(block)
        norm = global_norm(scaled)
        for group, ps, block in ctx.blocks(scaled):
            if group["adaptive"]:
                block = torch._foreach_mul(block, torch._foreach_abs(ps))
            torch._foreach_mul_(block, group["rho"] / (norm + 1e-12))
            torch._foreach_add_(ps, block)

    # ------------------------------------------------------------------ davda54/sam's API
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, loss: Tensor | None = None) -> None:
        r"""Phase 1 of a step: ``p.grad`` holds :math:`\nabla L(\theta)` (the caller ran the
        backward); move the parameters to θ + ε and clear the gradients for the second backward.

        The gradients are always cleared (the second backward must not add to the first);
        ``zero_grad`` is accepted for davda54/sam's signature.  ``loss`` (optional) is the loss
        of this pass: it is then checked for non-finite values and reported in ``last_step``.
        """
        del zero_grad
        self._check_phase(False, "first_step()")
        ctx = self._begin_step()
        self._first_loss = self._recorded(ctx, loss)
        self._ascend(ctx)
        for p in ctx.params:
            p.grad = None
        self._between = True

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, *, loss: Tensor | None = None) -> None:
        r"""Phase 2: ``p.grad`` holds :math:`\nabla L(\theta + \varepsilon)`; restore θ, run the
        end-of-step policies and the base step (as ``step(closure)`` does); with ``zero_grad``
        the gradients are cleared afterwards.  ``loss``: the loss of this pass (optional)."""
        self._check_phase(True, "second_step()")
        self._between = False
        ctx = self.context
        try:
            second = self._recorded(ctx, loss)
        except BaseException:
            ctx.restore()
            raise
        ctx.restore()
        known = [v for v in (self._first_loss, second) if v is not None]
        losses = torch.stack(known) if known else torch.zeros(0, device=ctx.params[0].device)
        took = self._finish_step(ctx.grads(), losses)
        first = self._first_loss
        self._diagnose(
            losses[-1:] if second is not None else losses[:0],
            first if first is not None else torch.tensor(float("nan")),
            took,
        )
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def _recorded(self, ctx: StepContext, loss: Tensor | None) -> Tensor | None:
        return ctx.record_pass(None if loss is None else checked_loss(loss))

    def _check_phase(self, between: bool, call: str) -> None:
        if self._between != between:
            if between:
                raise RuntimeError(f"{call} needs first_step() first (davda54/sam's order)")
            raise RuntimeError(
                f"{call} after first_step(): call second_step() to finish the step first"
            )

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [("rho", self.defaults["rho"]), ("adaptive", self.defaults["adaptive"])]
