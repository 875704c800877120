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
i.e. about SAM's 2.  With k = 1 every step is a TSAM step and nothing else (no clean pass: the
result is TSAM's, bit for bit, with BatchNorm and dropout too).  The correction v is kept per
parameter in the ``state_dict`` so a resumed run continues the cycle exactly; a parameter
unfrozen since the last full step gets no correction until the next.

BatchNorm (``model=``): the clean pass of a full step is undone in the running statistics, so a
full step updates them once (TSAM's first pass), as does a corrected step (its one pass).  The
clean pass draws dropout masks from the global RNG, so with k > 1 the TSAM passes of a full step
see other masks than a plain TSAM step would (same distribution).

Non-finite values: a full step whose clean pass is not finite raises under
``nonfinite="raise"`` (before any step is taken); under the skip policies or with a GradScaler
(whose inf steps are expected) the TSAM step goes on under its own checks and v is kept from
the last full step that gave a finite one.  Finding this out costs one host synchronisation per
full step.  v is computed from ``p.grad`` after the base step, which no ``torch.optim``
optimizer changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_int_at_least, check_nonnegative
from tiltedsam.optim.diagnostics import StepDiagnostics
from tiltedsam.optim.param_state import ParamState
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
        self._correction = ParamState("correction")  # v per parameter, once a full step made it

    @property
    def passes_per_step(self) -> float:  # type: ignore[override]
        """Closure calls per step, averaged over a cycle of k steps (k = 1: TSAM's 2s)."""
        if self.every == 1:
            return super().passes_per_step
        return (1 + super().passes_per_step + (self.every - 1)) / self.every

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor:  # type: ignore[override]
        """A full TSAM step (every k-th, or while no correction exists) or a corrected one."""
        closure = self._require_closure(closure)
        full = not self._correction or self.step_count % self.every == 0
        if full and self.every == 1:
            return TSAM._step_without_hooks(self, closure)  # k = 1: TSAM itself (no clean pass)
        ctx = self._begin_step(save_theta=False)
        if full:
            return self._full_step(ctx, closure)
        loss = ctx.evaluate(closure)  # the clean pass at θ
        grads = ctx.grads()
        v = self._correction.get(self.param_groups, ctx.params)
        scale = global_norm(grads) / global_norm(v).add_(1e-12) * self.alpha
        torch._foreach_add_(grads, torch._foreach_mul(v, scale))
        t = self.tilt
        took = self._finish_step(grads, loss.reshape(1))
        self.last_step = StepDiagnostics(tilt=t, weight_tilt=t, losses=loss.reshape(1),
                                         objective=loss, took_step=took)  # fmt: skip
        return loss

    def _full_step(self, ctx: Any, closure: Any) -> Tensor:
        """g0 at θ (its BatchNorm update undone: TSAM's passes make the step's one), then a TSAM
        step, then v from G and g0 when both are finite."""
        try:
            loss = ctx.evaluate(closure)
        finally:  # the statistics as the step began (kept by the step context)
            ctx.batchnorm.rollback()
        params = list(ctx.params)
        clean = ctx.buffer("clean")
        torch._foreach_copy_(clean, ctx.grads())
        clean_ok = bool(torch.isfinite(loss) & torch.isfinite(global_norm(clean)))
        if not clean_ok and self.nonfinite == "raise" and not ctx.scaler.active:
            raise FloatingPointError(
                f"tsam-intermittent: the clean pass at θ (for the correction v) gave loss "
                f"{loss.item():.6g} or a non-finite gradient; pass nonfinite='skip' to keep the "
                "last correction on such steps"
            )
        objective = TSAM._step_without_hooks(self, closure)  # leaves G (clipped) in p.grad
        if clean_ok and self.last_step is not None and self.last_step.took_step:
            v = _orthogonal_part(params, clean)
            if bool(torch.isfinite(global_norm(v))):
                self._correction.set(self.param_groups, params, v)
        return objective

    @property
    def extra_buffers(self) -> int:
        """Parameter-sized buffers beyond the base optimizer's: TSAM's, g0 and the kept v."""
        return super().extra_buffers + 1

    def _extra_state(self) -> dict[str, Any]:
        state = super()._extra_state()
        state["correction"] = self._correction.state()
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        self._correction.load(state.get("correction"), self.param_groups)

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [*super()._repr_items(), ("every", self.every), ("alpha", self.alpha)]


def _orthogonal_part(params: list[Tensor], clean: list[Tensor]) -> list[Tensor]:
    """``G - <G, g0>/‖g0‖² g0`` with ``G`` the gradient the base step used (``p.grad``)."""
    tilted = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    # Sums in float32 at least: a float16 dot product overflows long before the gradients do.
    dot = torch.stack([(a.to(_wide(a)) * b.to(_wide(a))).sum()
                       for a, b in zip(tilted, clean, strict=True)]).sum()  # fmt: skip
    coef = dot / global_norm(clean).to(dot.dtype).square().add_(1e-24)
    return [a - (coef * b.to(coef.dtype)).to(a.dtype) for a, b in zip(tilted, clean, strict=True)]


def _wide(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


__all__ = ["TSAMIntermittent"]
