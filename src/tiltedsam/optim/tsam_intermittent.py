r"""Intermittent TSAM: a full TSAM step every k steps, its correction reused between (issue #21).

LookSAM (Liu et al., CVPR 2022) computes SAM's gradient every k steps only and, in between,
adds to the plain gradient the part of the last SAM gradient orthogonal to the plain gradient,
rescaled to the current gradient's norm.  ``TSAMIntermittent`` (registry name
``tsam-intermittent``) does the same with TSAM's tilted gradient.  Every ``every``-th step
(the first one included):

.. math::

    g_0 = \nabla L(\theta),\qquad G = \textstyle\sum_j \operatorname{softmax}(tL)_j\,
    \nabla L(\theta+\varepsilon_j),\qquad
    v = G - \frac{\langle G, g_0\rangle}{\lVert g_0\rVert^2}\, g_0,

and the base optimizer steps with G (a TSAM step, plus the clean pass: 1 + 2s passes).  At the
other steps one pass gives :math:`g = \nabla L(\theta)` and the base optimizer steps with

.. math::

    g + \alpha\, \frac{\lVert g\rVert}{\lVert v\rVert}\, v

(1 pass).  So a step costs :math:`(1 + 2s + (k-1))/k` passes on average: 2.2 at s = 3, k = 5,
i.e. about SAM's 2.  With k = 1 every step is a TSAM step (plus a clean pass that changes
nothing: the result equals TSAM's).  The correction v is kept in the ``state_dict`` so a resumed
run continues the cycle exactly.  BatchNorm (``model=``): the clean pass of a full step and the
TSAM passes each keep their first pass's statistics, so a full step updates them twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_int_at_least, check_nonnegative
from tiltedsam.optim.diagnostics import StepDiagnostics
from tiltedsam.optim.tsam import TSAM


class TSAMIntermittent(TSAM):
    r"""TSAM every ``every`` steps, LookSAM's reuse of its correction in between (module doc).

    Args:
        params, base_optimizer_cls: as for :class:`~tiltedsam.optim.tsam.TSAM`.
        every: k >= 1, a full TSAM step every k steps.
        alpha: α >= 0, the weight of the reused correction (LookSAM's default 0.7).
        tilt, num_samples, rho, noise_radius, sampler, noise, delta, tilt_schedule, total_steps,
            model, bn_update, seed, nonfinite: as for TSAM (its full steps).
        **base_kwargs: passed to ``base_optimizer_cls``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        *,
        every: int = 5,
        alpha: float = 0.7,
        tilt: float = 1.0,
        num_samples: int = 3,
        rho: float = 0.05,
        noise_radius: float = 1.0,
        sampler: str = "ascent",
        noise: str | None = None,
        delta: float = 0.0,
        tilt_schedule: str = "constant",
        total_steps: int | None = None,
        model: nn.Module | None = None,
        bn_update: str = "first",
        seed: int | None = None,
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        self.every = check_int_at_least("every", every, 1)
        self.alpha = check_nonnegative("alpha", alpha)
        super().__init__(
            params, base_optimizer_cls, tilt=tilt, num_samples=num_samples, rho=rho,
            noise_radius=noise_radius, sampler=sampler, noise=noise, delta=delta,
            tilt_schedule=tilt_schedule, total_steps=total_steps, model=model,
            bn_update=bn_update, seed=seed, nonfinite=nonfinite, batched=False, **base_kwargs,
        )  # fmt: skip
        self._correction: list[Tensor] | None = None  # v, once a full step made it

    @property
    def passes_per_step(self) -> float:  # type: ignore[override]
        """Closure calls per step, averaged over a cycle of k steps."""
        return (1 + super().passes_per_step + (self.every - 1)) / self.every

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor:  # type: ignore[override]
        """A full TSAM step (every k-th, or while no correction exists) or a corrected one."""
        closure = self._require_closure(closure)
        full = self._correction is None or self.step_count % self.every == 0
        ctx = self._begin_step(save_theta=False)
        loss = ctx.evaluate(closure)  # the clean pass at θ
        if full:
            clean = [g.clone() for g in ctx.grads()]
            objective = super().step(closure)  # leaves G (clipped, if asked) in p.grad
            if self.last_step is not None and self.last_step.took_step:
                self._correction = _orthogonal_part(ctx.params, clean)
            return objective
        grads = ctx.grads()
        v = self._correction
        scale = global_norm(grads) / global_norm(v).add_(1e-12) * self.alpha
        torch._foreach_add_(grads, torch._foreach_mul(v, scale))
        t = self.tilt
        took = self._finish_step(grads, loss.reshape(1))
        self.last_step = StepDiagnostics(tilt=t, weight_tilt=t, losses=loss.reshape(1),
                                         objective=loss, took_step=took)  # fmt: skip
        return loss

    def _extra_state(self) -> dict[str, Any]:
        state = super()._extra_state()
        state["correction"] = self._correction
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        stored = state.get("correction")
        self._correction = None if stored is None else [t.clone() for t in stored]

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [*super()._repr_items(), ("every", self.every), ("alpha", self.alpha)]


def _orthogonal_part(params: list[Tensor], clean: list[Tensor]) -> list[Tensor]:
    """``G - <G, g0>/‖g0‖² g0`` with ``G`` the gradient the base step used (``p.grad``)."""
    tilted = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    dot = torch.stack([(a * b).sum() for a, b in zip(tilted, clean, strict=True)]).sum()
    coef = dot / global_norm(clean).square().add_(1e-24)
    return [a - coef * b for a, b in zip(tilted, clean, strict=True)]


__all__ = ["TSAMIntermittent"]
