r"""A cheaper TSAM estimator: score s perturbations with forward passes, back-propagate at one.

TSAM's ascent estimator (``TSAM``, paper Alg. 1+2) costs 2s forward+backward passes per step.
``TSAMResample`` (registry name ``tsam-resample``) draws the same kind of perturbations, scores
each with a **forward pass only** (no graph, no backward), picks one index J with probability
:math:`\mathrm{softmax}(t \ell)_J` (:math:`\ell_j` the scored losses) and back-propagates only
there, at :math:`\theta + \varepsilon_J`:

.. math::

    \mathbb E_J\big[\nabla L(\theta + \varepsilon_J)\big]
      = \sum_{j=1}^s \mathrm{softmax}(t\ell)_j\, \nabla L(\theta + \varepsilon_j),

a self-normalised tilted average like TSAM's, unbiased in expectation over the resampling
instead of computed exactly; the extra variance is that of one draw from the weights.  J is
drawn with the Gumbel-max trick, streamed: each sample gets the key :math:`t\ell_j + G_j`
(:math:`G_1..G_s` standard Gumbel, drawn from the optimizer's generator at the start of the
step) and the point with the largest key so far is kept in one parameter-sized buffer
(``_foreach_lerp_`` with a 0/1 weight, exact at both ends).  No index is read on the host, so
the step does not synchronise.

Where the perturbations come from (``ascent=``):

* ``"selected"`` (default): score the noisy points :math:`\theta + \xi_j` (ξ_j the ascent
  sampler's noise of radius r, ``noise_radius``), pick J, then take the ascent sampler's step
  from the chosen point, :math:`\varepsilon_J = \xi_J + \rho\,\hat g(\theta+\xi_J)`, and
  back-propagate there.  The scores are :math:`\ell_j = L(\theta + \xi_j)`, not the losses
  at the final points :math:`\theta + \varepsilon_j`: a tilted choice of the *start* of
  TSAM's ascent (with s = 1 it is TSAM with s = 1).  Passes: s (forward only) + 2.
* ``"shared"``: one pass at θ gives :math:`d = \rho\,\nabla L(\theta)/\|\nabla L(\theta)\|`;
  :math:`\varepsilon_j = \xi_j + d`.  The gradient is taken at the scored point itself
  (:math:`\ell_j = L(\theta+\varepsilon_j)`), so the expectation is exactly TSAM's weighted
  average for these points: TSAM with the ascent direction shared by the s samples (computed
  at θ instead of at each θ + ξ_j).  Passes: 1 (clean) + s (forward only) + 1.
* ``"none"``: score :math:`\theta + \xi_j` and back-propagate at :math:`\theta + \xi_J` (no ascent):
  the resampled form of the naive estimator (paper Fig. 8).  Passes: s (forward only) + 1.
* ``"stale"`` (issue #21): as ``shared``, but the ascent direction is the *previous* step's,
  :math:`d = \rho\, G_{k-1}/\lVert G_{k-1}\rVert` with :math:`G_{k-1}` the gradient the last step
  took at its drawn point (free: no fresh ascent pass; 0 at the first step, which is then
  ``none``).  Passes: s (forward only) + 1, fewer than SAM's 2 when a forward pass costs a
  third of a forward+backward one.  The unit direction :math:`G_{k-1}/\lVert G_{k-1}\rVert` is
  kept (per parameter, in the ``state_dict``) and multiplied by the *current* ρ of each group,
  so a change of ρ takes effect at once; a parameter without one (unfrozen since) adds 0.

On MNIST-1D the first three reach TSAM's accuracy within one standard deviation; ``selected`` with
s = 2 (the default) came closest at the lowest cost (``docs/performance.md``).

A forward-only pass costs about a third of a forward+backward pass, so ``selected``/``shared``
cost about SAM + s/3 passes.  The closure is asked for a forward-only pass with
``closure(backward=False)`` (called under ``torch.no_grad()``); write it as::

    def closure(backward=True):
        loss = loss_fn(model(x), y)
        if backward:
            loss.backward()
        return loss

:func:`tiltedsam.make_closure`'s closures take the parameter (with their micro-batches and
autocast), as do Lightning's ``manual_step`` and the harness's.  A closure without a
``backward`` parameter still works: scoring passes then run forward and backward and throw the
gradient away (correct, but no cheaper than TSAM's passes).

BatchNorm (``model=``): as for every optimizer here, only the first pass of a step updates the
running statistics (``bn_update="first"``): the first scoring pass, or the clean pass at θ
for ``shared``.

Memory: θ and the kept point (two parameter-sized buffers), plus the shared direction during a
``shared`` step: at most three, independent of s.  ``stale`` keeps its direction between steps
and builds the next one in a buffer: four.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._tensors import global_norm
from tiltedsam._validation import check_choice, check_int_at_least
from tiltedsam.optim.base import (
    PERTURBATION_CHECKS,
    Closure,
    PerturbationOptimizer,
    perturbation_defaults,
)
from tiltedsam.optim.diagnostics import StepDiagnostics
from tiltedsam.optim.param_state import ParamState
from tiltedsam.samplers import NOISE_KINDS, add_noise, ascend
from tiltedsam.schedules import TiltSchedule
from tiltedsam.tilt import tilted_objective

ASCENTS = ("selected", "shared", "none", "stale")


def accepts_backward_flag(closure: Callable) -> bool:
    """Whether ``closure`` takes a ``backward`` argument (so it can run forward only)."""
    code = getattr(closure, "__code__", None)
    if code is not None:
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        return "backward" in names
    try:
        import inspect

        return "backward" in inspect.signature(closure).parameters
    except (TypeError, ValueError):
        return False


@dataclass(kw_only=True)
class ResampleDiagnostics(StepDiagnostics):
    """``StepDiagnostics`` of the scored losses plus the chosen index and the loss where the
    gradient was taken.  ``weights`` are the resampling probabilities softmax(t·L)."""

    selected: Tensor | None = None
    final_loss: Tensor | None = None


class TSAMResample(PerturbationOptimizer):
    r"""TSAM with forward-only scoring and tilted resampling of one perturbation per step.

    Args:
        params, base_optimizer_cls: as for :class:`~tiltedsam.optim.tsam.TSAM`.
        tilt: t in [0, inf]; the resampling probabilities are softmax(t·L) (t = 0: uniform;
            t = inf: uniform over the samples tying for the largest loss).
        num_samples: s >= 1 scored perturbations per step.
        rho: ascent length ρ (``selected``, ``shared``, ``stale``).
        noise_radius: radius r of the noise ξ (``noise="gaussian"`` or ``"ball"``, as TSAM).
        ascent: ``"selected"``, ``"shared"``, ``"none"`` or ``"stale"`` (module docstring).
        tilt_schedule, total_steps, model, bn_update, seed, nonfinite: as for TSAM.
        **base_kwargs: passed to ``base_optimizer_cls``.

    ``step(closure)`` returns the log-mean-exp of the s scored losses at tilt t.
    """

    group_checks = PERTURBATION_CHECKS

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        *,
        tilt: float = 1.0,
        num_samples: int = 2,
        rho: float = 0.05,
        noise_radius: float = 1.0,
        noise: str = "gaussian",
        ascent: str = "selected",
        tilt_schedule: str = "constant",
        total_steps: int | None = None,
        model: nn.Module | None = None,
        bn_update: str = "first",
        seed: int | None = None,
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        self.schedule = TiltSchedule(tilt, tilt_schedule, total_steps)
        self.num_samples = check_int_at_least("num_samples", num_samples, 1)
        self.noise = check_choice("noise", noise, NOISE_KINDS)
        self.ascent = check_choice("ascent", ascent, ASCENTS)
        super().__init__(
            params,
            base_optimizer_cls,
            perturbation_defaults(rho, noise_radius),
            model=model,
            bn_update=bn_update,
            nonfinite=nonfinite,
            seed=seed,
            **base_kwargs,
        )
        # ascent="stale": G/‖G‖ of the last step's gradient, per parameter (ρ applied when used)
        self._stale = ParamState("stale_direction")

    def _extra_state(self) -> dict[str, Any]:
        return {"stale_direction": self._stale.state()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._stale.load(state.get("stale_direction"), self.param_groups)

    @property
    def extra_buffers(self) -> int:
        """Parameter-sized buffers beyond the base optimizer's (``stale``: its direction too)."""
        return super().extra_buffers + (1 if self.ascent == "stale" else 0)

    @property
    def passes_per_step(self) -> int:
        """Closure calls per step, forward-only scoring passes included."""
        return self.num_samples + (1 if self.ascent in ("none", "stale") else 2)

    @property
    def tilt(self) -> float:
        return self.schedule(self.step_count)

    # ------------------------------------------------------------------ pieces
    def _gumbels(self, n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``n`` standard Gumbel variates, −log(−log U), from the optimizer's generator."""
        u = torch.rand(n, generator=self.generator, device=device, dtype=dtype)
        return u.log_().neg_().log_().neg_()

    def _key_dtype(self, device: torch.device) -> torch.dtype:
        return torch.float32 if device.type == "mps" else torch.float64

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """Score s perturbations, resample one by softmax(t·L), one base step with its gradient."""
        closure = self._require_closure(closure)
        forward_only = accepts_backward_flag(closure)
        t = self.tilt
        ctx = self._begin_step()
        params = ctx.params
        kept = ctx.buffer("selected")
        noise_free = all(r == 0.0 for r in ctx.radii("noise_radius"))
        direction: list[Tensor] | None = None
        if self.ascent == "stale" and self._stale:  # none at the first step: no ascent yet
            direction = self._stale.get(self.param_groups, params)  # G/‖G‖: ρ applied below
        if self.ascent == "shared":
            ctx.evaluate(closure)
            direction = ctx.grads()  # scaled in place to ρ g/‖g‖ (kept alive here)
            inv_norm = global_norm(direction).add_(1e-12).reciprocal_()
            for group, _ps, block in ctx.blocks(direction):
                torch._foreach_mul_(block, inv_norm * float(group["rho"]))
        losses: list[Tensor] = []
        device = params[0].device
        key_dtype = self._key_dtype(device)
        gumbels = self._gumbels(self.num_samples, device, key_dtype)
        best_key = best_gumbel = chosen = None
        for j in range(self.num_samples):
            if j > 0 and noise_free:
                ctx.restore()  # add_noise leaves the parameters alone at radius 0
            add_noise(ctx, "noise_radius", self.noise)
            if direction is not None and self.ascent == "shared":
                torch._foreach_add_(params, direction)
            elif direction is not None:  # stale: θ + ξ_j + ρ d with this step's ρ of each group
                for group, ps, block in ctx.blocks(direction):
                    torch._foreach_add_(ps, block, alpha=float(group["rho"]))
            loss = ctx.score(closure, forward_only)  # forward only when the closure allows
            losses.append(loss)
            wide = loss.to(key_dtype)
            gumbel = gumbels[j]
            key = wide if math.isinf(t) else torch.add(gumbel, wide, alpha=t)
            if j == 0:
                torch._foreach_copy_(kept, params)
                best_key, best_gumbel = key, gumbel
                chosen = torch.zeros((), dtype=torch.long, device=device)
                continue
            if math.isinf(t):  # ties in the loss are broken by the Gumbel variate
                better = (key > best_key) | ((key == best_key) & (gumbel > best_gumbel))
                best_gumbel = torch.where(better, gumbel, best_gumbel)
            else:  # continuous keys: a tie has probability 0
                better = key > best_key
            torch._foreach_lerp_(kept, params, [better.to(kept[0].dtype)] * len(kept))
            best_key = torch.maximum(best_key, key)
            chosen = torch.where(better, j, chosen)
        del direction
        torch._foreach_copy_(params, kept)
        if self.ascent == "selected":
            ctx.evaluate(closure)
            ascend(ctx, ctx.grads(), "rho")
        final = ctx.evaluate(closure)
        grads = ctx.grads()
        ctx.restore()
        upcoming = None
        if self.ascent == "stale":  # next step's direction: G / ‖G‖ of this step's gradient
            upcoming = ctx.buffer("upcoming")
            torch._foreach_copy_(upcoming, grads)
            torch._foreach_mul_(upcoming, global_norm(grads).add_(1e-12).reciprocal_())
        scored = torch.stack(losses)
        objective = tilted_objective(scored, t)
        took = self._finish_step(grads, torch.cat([scored, final.reshape(1)]))
        if upcoming is not None and took:  # a skipped (non-finite) step leaves it as it was
            self._stale.set(self.param_groups, params, upcoming)
        self.last_step = ResampleDiagnostics(
            tilt=t,
            weight_tilt=t,
            losses=scored,
            objective=objective,
            took_step=took,
            selected=chosen,
            final_loss=final,
        )
        return objective

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [
            ("tilt", self.schedule.tilt),
            ("tilt_schedule", self.schedule.kind),
            ("num_samples", self.num_samples),
            ("rho", self.defaults["rho"]),
            ("noise_radius", self.defaults["noise_radius"]),
            ("noise", self.noise),
            ("ascent", self.ascent),
        ]


__all__ = ["ASCENTS", "ResampleDiagnostics", "TSAMResample", "accepts_backward_flag"]
