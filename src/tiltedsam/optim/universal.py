r"""Frob-SAM, Det-SAM and Trace-SAM: instances of the universal sharpness-aware class
(Tahmasebi, Soleymani, Bahri, Jegelka, Jaillet; ICML 2024, "A Universal Class of
Sharpness-Aware Minimization Algorithms"; official code dbahri/universal_sam, ``solver/sam.py``).

Each step takes :math:`g_0 = \nabla L(\theta)`, :math:`L_0 = L(\theta)`, then n perturbed passes
:math:`L_i = L(\theta + \varepsilon_i)`, :math:`g_i = \nabla L(\theta + \varepsilon_i)`
(1 + n passes), and steps with

* **Trace-SAM** (ε ~ N(0, ρ²I)): :math:`g = g_0 + \lambda \frac1n \sum_i (g_i - g_0)`;
* **Frob-SAM** (ε ~ N(0, ρ²I), n ≥ 2):
  :math:`g = g_0 + \frac{\lambda}{\rho^2}\,\mathrm{Cov}(L_i, g_i)` (unbiased, 1/(n−1));
* **Det-SAM** (ε uniform in the cube :math:`\rho\,[-h, h]^d`): with :math:`d_i = (L_i - L_0)/\rho^2`,
  :math:`\psi(x) = e^{-x/2}`, :math:`c = \frac1n \sum_i \psi(d_i)`,
  :math:`g = g_0 + \lambda\,\phi'(c) \sum_i \frac{\psi'(d_i)}{n}(g_i - g_0)` with
  :math:`\phi'(x) = -2/x^3`, which simplifies to
  :math:`g = g_0 + \lambda\, c^{-2} \sum_i \mathrm{softmax}(-d/2)_i\,(g_i - g_0)`.
  Both factors are computed in log space (``log c`` by logsumexp, the softmax by the streaming
  accumulator), so large loss differences do not overflow; only the true value
  :math:`c^{-2}` (:math:`e^{d}` for n = 1) can, and then the non-finite policy applies.

``step`` returns :math:`L_0`.  Defaults follow the official README's CIFAR-10 commands
(Frob: ρ = 0.005, λ = 0.005, n = 2; Det: ρ = 1, λ = 1, n = 1, h = 0.01; Trace: ρ = 0.01, λ = 1,
n = 1).  Departures: the official code leaves BatchNorm statistics updating in every pass (here:
first pass only, with ``model=``); its Trace-SAM sampler computes a sphere normalisation that it
never applies, so the samples are plain Gaussians, as here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._validation import check_int_at_least, check_nonnegative, check_positive
from tiltedsam.optim.base import Closure, PerturbationOptimizer
from tiltedsam.optim.context import StepContext
from tiltedsam.optim.groups import option_checks
from tiltedsam.samplers import add_iid_noise
from tiltedsam.tilt import TiltedAccumulator


class _UniversalSAM(PerturbationOptimizer):
    """Shared loop: g0 at θ, then n passes at θ + ε_i; subclasses fold (L_i, g_i) in."""

    min_samples = 1
    rho_may_be_zero = False  # Frob- and Det-SAM divide by ρ²
    group_checks = option_checks(rho=check_positive, lam=check_nonnegative)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float,
        lam: float,
        num_samples: int,
        *,
        model: nn.Module | None = None,
        bn_update: str = "first",
        nonfinite: str = "raise",
        seed: int | None = None,
        extra_defaults: dict[str, Any] | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.num_samples = check_int_at_least("num_samples", num_samples, self.min_samples)
        check_rho = check_nonnegative if self.rho_may_be_zero else check_positive
        defaults = {
            "rho": check_rho("rho", rho),
            "lam": check_nonnegative("lam", lam),
            **(extra_defaults or {}),
        }
        super().__init__(
            params, base_optimizer_cls, defaults, model=model, bn_update=bn_update,
            nonfinite=nonfinite, seed=seed, **base_kwargs,
        )  # fmt: skip

    @property
    def passes_per_step(self) -> int:
        return 1 + self.num_samples

    def _perturb(self, ctx: StepContext) -> None:
        add_iid_noise(ctx, ctx.radii("rho"), "normal")

    def _start(self, ctx: StepContext, loss0: Tensor) -> None:
        raise NotImplementedError

    def _add(self, loss: Tensor, grads: list[Tensor], g0: list[Tensor], loss0: Tensor) -> None:
        raise NotImplementedError

    def _finish(self, ctx: StepContext) -> tuple[list[Tensor], Tensor]:
        raise NotImplementedError

    def _prepare(self, ctx: StepContext) -> None:
        """Checks of the step's settings before any pass (none by default)."""

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        closure = self._require_closure(closure)
        ctx = self._begin_step()
        self._prepare(ctx)
        loss0 = ctx.evaluate(closure)
        g0 = ctx.buffer("g0")
        torch._foreach_copy_(g0, ctx.grads())
        self._start(ctx, loss0)
        for _ in range(self.num_samples):
            self._perturb(ctx)
            loss = ctx.evaluate(closure)
            self._add(loss, ctx.grads(), g0, loss0)
            ctx.restore()
        correction, losses = self._finish(ctx)
        # g = g0 + λ · correction  (λ per group); written into the correction buffers.
        pairs = zip(ctx.blocks(correction), ctx.blocks(g0), strict=True)
        for (group, _, block), (_, _, g0_block) in pairs:
            torch._foreach_mul_(block, group["lam"])
            torch._foreach_add_(block, g0_block)
        every = torch.cat([loss0.reshape(1), losses])
        took = self._finish_step(correction, every)
        return self._diagnose(every[1:], loss0, took, **self._weighting())

    def _weighting(self) -> dict[str, Tensor]:
        """How the diagnostics weight the samples (Det-SAM: softmax of its scores); {} if not."""
        return {}


class TraceSAM(_UniversalSAM):
    r"""Trace-SAM: :math:`g = g_0 + \lambda\,\frac1n\sum_i (\nabla L(\theta+\varepsilon_i) - g_0)`,
    ε ~ N(0, ρ²I); with n = 1, λ = 1 it is the gradient at one random Gaussian point."""

    rho_may_be_zero = True
    group_checks = option_checks(rho=check_nonnegative, lam=check_nonnegative)

    def __init__(self, params, base_optimizer_cls, rho: float = 0.01, lam: float = 1.0,
                 num_samples: int = 1, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(params, base_optimizer_cls, rho, lam, num_samples, **kwargs)

    def _start(self, ctx: StepContext, loss0: Tensor) -> None:
        self._mean = TiltedAccumulator(0.0, buffers=ctx.buffer("mean"))

    def _add(self, loss: Tensor, grads: list[Tensor], g0: list[Tensor], loss0: Tensor) -> None:
        torch._foreach_sub_(grads, g0)
        self._mean.add(loss, grads)

    def _finish(self, ctx: StepContext) -> tuple[list[Tensor], Tensor]:
        return self._mean.result(), self._mean.stacked_losses()


class FrobSAM(_UniversalSAM):
    r"""Frob-SAM: :math:`g = g_0 + (\lambda/\rho^2)\,\mathrm{Cov}_i(L_i, g_i)`, ε ~ N(0, ρ²I), n ≥ 2.

    The covariance is accumulated as :math:`\sum_i (L_i - L_0) g_i` and :math:`\sum_i g_i`
    (losses centred at :math:`L_0` to limit cancellation).
    """

    min_samples = 2

    def __init__(self, params, base_optimizer_cls, rho: float = 0.005, lam: float = 0.005,
                 num_samples: int = 2, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(params, base_optimizer_cls, rho, lam, num_samples, **kwargs)

    def _start(self, ctx: StepContext, loss0: Tensor) -> None:
        self._loss0 = loss0
        self._weighted = ctx.buffer("loss_weighted_sum")
        self._sum = ctx.buffer("grad_sum")
        torch._foreach_zero_(self._weighted)
        torch._foreach_zero_(self._sum)
        self._losses: list[Tensor] = []

    def _add(self, loss: Tensor, grads: list[Tensor], g0: list[Tensor], loss0: Tensor) -> None:
        self._losses.append(loss)
        torch._foreach_add_(self._sum, grads)
        torch._foreach_mul_(grads, loss - loss0)
        torch._foreach_add_(self._weighted, grads)

    def _finish(self, ctx: StepContext) -> tuple[list[Tensor], Tensor]:
        n = self.num_samples
        losses = torch.stack(self._losses)
        # Cov = [Σ(L_i − L0) g_i − Σ(L_i − L0) · (Σ g_i)/n] / (n − 1), then divided by ρ².
        torch._foreach_mul_(self._sum, (losses - self._loss0).sum() / n)
        torch._foreach_sub_(self._weighted, self._sum)
        for group, _ps, block in ctx.blocks(self._weighted):
            torch._foreach_mul_(block, 1.0 / ((n - 1) * float(group["rho"]) ** 2))
        return self._weighted, losses


class DetSAM(_UniversalSAM):
    r"""Det-SAM: :math:`g = g_0 + \lambda\,c^{-2}\sum_i \mathrm{softmax}(-d/2)_i (g_i - g_0)`,
    :math:`d_i = (L_i - L_0)/\rho^2`, :math:`c = \frac1n\sum_i e^{-d_i/2}`, ε uniform in ρ·[−h, h]^d."""

    group_checks = option_checks(
        rho=check_positive, lam=check_nonnegative, half_cube=check_positive
    )

    def __init__(self, params, base_optimizer_cls, rho: float = 1.0, lam: float = 1.0,
                 num_samples: int = 1, half_cube: float = 0.01, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(
            params, base_optimizer_cls, rho, lam, num_samples,
            extra_defaults={"half_cube": check_positive("half_cube", half_cube)}, **kwargs,
        )  # fmt: skip

    def _perturb(self, ctx: StepContext) -> None:
        scales = [r * h for r, h in zip(ctx.radii("rho"), ctx.radii("half_cube"), strict=True)]
        add_iid_noise(ctx, scales, "cube")

    def _prepare(self, ctx: StepContext) -> None:
        # d_i is one number for the whole model, so it needs one ρ: the groups' (as they are
        # now: a schedule or a loaded state may have changed them), never a stale default.
        radii = set(ctx.radii("rho"))
        if len(radii) != 1:
            raise ValueError(
                f"DetSAM: the score d_i = (L_i - L_0)/rho^2 needs one rho for all param groups, "
                f"got rho = {sorted(radii)}; give every group the same rho"
            )
        self._rho = radii.pop()

    def _start(self, ctx: StepContext, loss0: Tensor) -> None:
        # The accumulator with t = 1 on the scores −d_i/2 gives Σ softmax(−d/2)_i (g_i − g0).
        self._acc = TiltedAccumulator(1.0, buffers=ctx.buffer("weighted_diff"))
        self._scores: list[Tensor] = []
        self._losses: list[Tensor] = []

    def _add(self, loss: Tensor, grads: list[Tensor], g0: list[Tensor], loss0: Tensor) -> None:
        score = -(loss - loss0) / (2 * self._rho**2)
        self._losses.append(loss)
        self._scores.append(score)
        torch._foreach_sub_(grads, g0)
        self._acc.add(score, grads)

    def _finish(self, ctx: StepContext) -> tuple[list[Tensor], Tensor]:
        scores = self._stacked_scores = torch.stack(self._scores)
        log_c = torch.logsumexp(scores, dim=0) - math.log(len(self._scores))
        result = self._acc.result()
        torch._foreach_mul_(result, torch.exp(-2.0 * log_c))
        return result, torch.stack(self._losses)

    def _weighting(self) -> dict[str, Tensor]:
        return {"scores": self._stacked_scores}  # softmax(−d/2): the weights of g_i − g0
