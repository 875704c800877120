r"""ERM: the base optimizer's own step, with the closure contract of every other method.

One pass at θ, :math:`g = \nabla L(\theta)`, then ``base.step()`` with it: the same update as the
base optimizer alone, bit for bit.  What the wrapper adds is the contract the perturbation
optimizers share, so a loop written for one method runs every method of the table unchanged:

* the gradients are cleared before the pass (``p.grad = None``): the closure must not zero them,
  and a loop that never calls ``zero_grad`` does not accumulate gradients across steps, as it
  would with a bare ``torch.optim.SGD``;
* ``last_step`` (:class:`~tiltedsam.optim.diagnostics.StepDiagnostics`), ``closure_calls``,
  ``skipped_steps``, ``compute_gradient``, and the shared options (``nonfinite``,
  ``grad_scaler``, ``max_grad_norm``, ``distributed``), which act as they do for SAM or TSAM.

The check for non-finite values is the one host synchronisation per step, as for every method;
``nonfinite="unchecked"`` removes it.  ``opt.param_groups`` and ``opt.state`` are the base
optimizer's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from tiltedsam.optim.base import Closure, PerturbationOptimizer


class ERM(PerturbationOptimizer):
    """The base optimizer with the closure contract: ``step(closure)`` clears the gradients,
    runs the closure once and steps with its gradient.

    Example::

        opt = ERM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
        loss = opt.step(closure)  # no zero_grad needed
    """

    passes_per_step = 1

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        *,
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer_cls, {}, nonfinite=nonfinite, seed=0, **base_kwargs)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One pass at θ and one base step with its gradient; returns :math:`L(\\theta)`."""
        closure = self._require_closure(closure)
        ctx = self._begin_step(save_theta=False)  # θ never moves: nothing to save
        loss = ctx.evaluate(closure)
        losses = loss.reshape(1)
        took = self._finish_step(ctx.grads(), losses)
        return self._diagnose(losses, loss, took)


__all__ = ["ERM"]
