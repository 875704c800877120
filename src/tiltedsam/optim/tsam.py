r"""TSAM: Tilted Sharpness-Aware Minimization (Li, Zhou, Bilmes; ICLR 2025, arXiv 2410.22656).

Objective (paper Eq. 3): :math:`L^t(\theta) = \frac1t \log \mathbb E_\mu[e^{tL(\theta+\varepsilon)}]`.
One step (paper Algorithm 1) with s perturbations drawn by a sampler (Algorithm 2 = ``ascent``):

.. math::

    g = \sum_{j=1}^s \mathrm{softmax}\big((t-\delta) L(\theta+\varepsilon_j)\big)_j\,
        \nabla L(\theta+\varepsilon_j), \qquad \delta = \texttt{delta}\cdot t,

then ``base.step()`` with ``p.grad = g``.  The weights are accumulated in a streaming,
log-space way (``TiltedAccumulator``): memory does not grow with s.

``delta`` selects the importance correction: the paper samples from :math:`e^{\delta L}` and
weights with exponent :math:`t - \delta` (``delta=0.5``, δ = t/2); the official code
(litian96/TSAM) weights with exponent t (``delta=0``).  The default, ``delta=0``, is the one that
measured better on MNIST-1D (see the README).  ``delta`` also sets the HMC sampler's target tilt δ.

``step`` returns the log-mean-exp estimate :math:`\frac1t\log\frac1s\sum_j e^{tL_j}` of the tilted
objective over the s perturbed losses (exponent t, not t − δ); no extra pass is made.  It is a
Monte-Carlo estimate with s samples and biased low.

Non-finite values: besides the shared policies (``"raise"``, ``"skip"``, ``"unchecked"``; see
:mod:`tiltedsam.optim.base`), ``nonfinite="skip_sample"`` drops a sample whose perturbed loss or
gradient is NaN/inf from the tilted average (weight 0, counted in ``skipped_samples``) and steps
with the others; if every sample of a step is dropped, the step is skipped (``skipped_steps``).
It adds no host synchronisation: the per-sample checks stay on the device.

Departures from the official code: BatchNorm statistics are updated once per step (first pass)
instead of once per sample; no gradient copies are stored; noise uses the optimizer's own
generator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._validation import (
    check_choice,
    check_int_at_least,
    check_unit_interval,
)
from tiltedsam.optim.base import (
    NONFINITE_POLICIES,
    PERTURBATION_CHECKS,
    Closure,
    PerturbationOptimizer,
    perturbation_defaults,
)
from tiltedsam.optim.batched import (
    DEFAULT_BATCHED_MAX_ELEMENTS,
    BatchedPath,
    BatchedUnsupported,
    check_mode,
    finite_samples,
    weighted_sum,
)
from tiltedsam.optim.context import StepContext
from tiltedsam.optim.diagnostics import masked_weights
from tiltedsam.samplers import HMCSampler, Sampler, make_sampler
from tiltedsam.schedules import TiltSchedule
from tiltedsam.tilt import TiltedAccumulator, tilted_objective, tilted_weights

TSAM_NONFINITE_POLICIES = (*NONFINITE_POLICIES, "skip_sample")


def _finite(loss: Tensor, grads: list[Tensor]) -> Tensor:
    """0-dim bool tensor on the device: the loss and every gradient entry are finite."""
    wide = loss.dtype == torch.float64 or any(g.dtype == torch.float64 for g in grads)
    dtype = torch.float64 if wide else torch.float32
    total = loss.to(dtype)
    if grads:
        total = total + torch.stack(torch._foreach_norm(grads, 2, dtype=dtype)).sum()
    return torch.isfinite(total)


def _masked_objective(losses: Tensor, mask: Tensor, t: float) -> Tensor:
    """The log-mean-exp estimate over the samples in ``mask`` (NaN if there is none)."""
    return tilted_objective(losses, t, mask=mask)


class TSAM(PerturbationOptimizer):
    r"""Tilted SAM around any ``torch.optim`` optimizer.

    Args:
        params: parameters or param groups (groups may override ``rho`` and ``noise_radius``).
        base_optimizer_cls: a ``torch.optim.Optimizer`` class, e.g. ``torch.optim.SGD``.
        tilt: t in [0, inf]; 0 is the average-perturbed loss, inf the max (SAM's limit).
        num_samples: s >= 1 perturbations per step.
        rho: ascent step length ρ >= 0 (``ascent``); ball radius for ``uniform`` and ``hmc``.
        noise_radius: radius r >= 0 of the random start ξ of the ``ascent`` sampler.
        sampler: ``"ascent"`` (paper Alg. 2), ``"hmc"`` (Eq. 11), ``"uniform"`` (naive), or a
            :class:`~tiltedsam.samplers.Sampler` instance.
        noise: ``"gaussian"`` or ``"ball"`` (see :mod:`tiltedsam.samplers`); None: the sampler's own.
        delta: importance-correction fraction in [0, 1]; weights use exponent (1 − delta)·t.
        tilt_schedule: ``"constant"``, ``"warmup"`` (0 → t) or ``"decay"`` (t → 0) over
            ``total_steps`` optimizer steps.
        total_steps: length K of a ``"warmup"`` or ``"decay"`` schedule, in optimizer steps.
        model: the module, so BatchNorm statistics update once per step (see ``bn_update``).
        bn_update: ``"first"`` (with ``model``, only the first pass of a step updates BatchNorm
            running statistics) or ``"every"`` (every pass does).
        seed: seed of the perturbation generator; default ``torch.initial_seed()``.
        nonfinite: ``"raise"``, ``"skip"`` (the whole step), ``"skip_sample"`` (drop the
            non-finite samples, step with the rest) or ``"unchecked"``.
        batched: ``"auto"``, True or False: evaluate the s perturbed models in one
            ``torch.func.vmap`` call (:mod:`tiltedsam.optim.batched`).  ``batched="auto"`` (the
            default) takes the batched path only on CUDA, with s ≥ 4 (so never at the default
            s = 3), s × (trainable parameters) ≤ ``batched_max_elements`` (2²⁴ by default)
            and a ``make_closure`` closure without accumulation, autocast or GradScaler; in
            every other case, and whenever the model or sampler cannot be batched, it takes the
            sequential step.  True forces it (an error says why it cannot run).
        batched_max_elements: the ``"auto"`` threshold above (default 2**24).
        **base_kwargs: passed to ``base_optimizer_cls`` (lr, momentum, weight_decay, ...).

    Passes (closure calls) per step: ``num_samples * sampler.passes_per_sample()`` (ascent: 2s).
    """

    group_checks = PERTURBATION_CHECKS

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        *,
        tilt: float = 1.0,
        num_samples: int = 3,
        rho: float = 0.05,
        noise_radius: float = 1.0,
        sampler: str | Sampler = "ascent",
        noise: str | None = None,
        delta: float = 0.0,
        tilt_schedule: str = "constant",
        total_steps: int | None = None,
        model: nn.Module | None = None,
        bn_update: str = "first",
        seed: int | None = None,
        nonfinite: str = "raise",
        batched: bool | str = "auto",
        batched_max_elements: int = DEFAULT_BATCHED_MAX_ELEMENTS,
        **base_kwargs: Any,
    ) -> None:
        check_choice("nonfinite", nonfinite, TSAM_NONFINITE_POLICIES)
        self.batching = BatchedPath(
            batched, check_int_at_least("batched_max_elements", batched_max_elements, 1)
        )
        self.schedule = TiltSchedule(tilt, tilt_schedule, total_steps)
        self.num_samples = check_int_at_least("num_samples", num_samples, 1)
        self.delta = check_unit_interval("delta", delta)
        self.sampler = make_sampler(sampler, noise)
        if isinstance(self.sampler, HMCSampler) and self.delta == 0.0:
            warnings.warn(
                "sampler='hmc' with delta=0: HMC's potential is delta*t*L(theta+eps), so its "
                "samples ignore the loss (a random kick from a uniform start in the rho-ball); "
                "set delta in (0, 1], e.g. delta=0.5 (docs/methods/tsam.md)",
                stacklevel=2,
            )
        super().__init__(
            params,
            base_optimizer_cls,
            perturbation_defaults(rho, noise_radius),
            model=model,
            bn_update=bn_update,
            # skip_sample is TSAM's own: the shared check skips the step if nothing is left.
            nonfinite="skip" if nonfinite == "skip_sample" else nonfinite,
            seed=seed,
            **base_kwargs,
        )
        self.nonfinite = nonfinite
        self._check_sampling_tilt()
        # Dropped samples, counted on the device (no synchronisation); read ``skipped_samples``.
        self._skipped_samples = torch.zeros((), dtype=torch.long, device=self.generator.device)

    def _check_sampling_tilt(self) -> None:
        """HMC multiplies the gradient by the sampling tilt δ·t (its largest value over the
        schedule is δ·tilt): it must be a number of the parameters' dtype, else the first
        leapfrog step is inf·∇L, NaN (t = inf with δ > 0 would sample from exp(inf·L))."""
        if not isinstance(self.sampler, HMCSampler) or self.delta == 0:
            return
        dtypes = {p.dtype for p in self._trainable_params() if p.is_floating_point()}
        limit = min((torch.finfo(d).max for d in dtypes), default=math.inf)
        sampling = self.delta * self.schedule.tilt
        if not sampling <= limit:
            raise ValueError(
                f"sampler='hmc' needs the sampling tilt delta*tilt <= {limit:g} (the largest "
                f"{'/'.join(sorted(str(d).removeprefix('torch.') for d in dtypes))} value), got "
                f"{self.delta:g}*{self.schedule.tilt:g}: its leapfrog step multiplies the "
                "gradient by it (NaN at the first step). Use delta=0 (the tilt then only "
                "weights the samples), a smaller tilt, or sampler='ascent'"
            )

    @property
    def batched(self) -> bool | str:
        """``"auto"``, True or False (see :mod:`tiltedsam.optim.batched`); may be set."""
        return self.batching.mode

    @batched.setter
    def batched(self, value: bool | str) -> None:
        self.batching.mode = check_mode(value)

    @property
    def passes_per_step(self) -> int:
        """Closure calls per step (HMC with ``mh=True`` adds one per rejected proposal)."""
        return self.num_samples * self.sampler.passes_per_sample()

    @property
    def skipped_samples(self) -> int:
        """Samples dropped by ``nonfinite="skip_sample"`` so far (reading it synchronises)."""
        return int(self._skipped_samples)

    @property
    def tilt(self) -> float:
        """The tilt the next step will use (after the schedule)."""
        return self.schedule(self.step_count)

    def _weight_tilt(self, t: float) -> float:
        if self.delta == 1.0:
            return 0.0
        return t if math.isinf(t) else (1.0 - self.delta) * t

    def _sample_tilt(self, t: float) -> float:
        if math.isinf(t):
            return t if self.delta > 0 else 0.0
        return self.delta * t

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One TSAM step; returns the log-mean-exp estimate of :math:`L^t` over the s samples."""
        closure = self._require_closure(closure)
        t = self.tilt
        weight_tilt = self._weight_tilt(t)
        ctx = self._begin_step(save_theta=False)
        if self.batching.should_run(ctx, closure, self.sampler, self.num_samples):
            try:
                return self._batched_step(ctx, closure, t, weight_tilt)
            except BatchedUnsupported as error:
                if self.batched is True:
                    raise ValueError(f"batched=True cannot be used here: {error}") from error
                self.batching.remember_failure(closure, error)
                ctx = self._begin_step(save_theta=False)
        ctx.save_theta()
        sample_tilt = self._sample_tilt(t)
        accumulator = TiltedAccumulator(weight_tilt, buffers=ctx.buffer("tilted_grad"))
        per_sample = self.nonfinite == "skip_sample"
        valid: list[Tensor] = []
        for _ in range(self.num_samples):
            self.sampler.perturb(ctx, closure, sample_tilt)  # θ + ε_j
            loss = ctx.evaluate(closure)  # L_j, g_j
            loss = self.sampler.finalize(ctx, closure, loss, sample_tilt)
            if per_sample:
                sample_grads = ctx.grads()
                valid.append(_finite(loss, sample_grads))
                accumulator.add(loss, sample_grads, valid=valid[-1])
                del sample_grads  # the next pass's backward must not find these still alive
            else:
                accumulator.add(loss, ctx.grads())  # running softmax((1-δ)tL)-weighted sum
            ctx.restore()
        mask = torch.stack(valid) if per_sample else None
        return self._conclude(
            accumulator.result(), accumulator.stacked_losses(), mask, t, weight_tilt, accumulator
        )

    def _batched_step(
        self, ctx: StepContext, closure: Closure, t: float, weight_tilt: float
    ) -> Tensor:
        """The step by :mod:`tiltedsam.optim.batched` (same result as the loop above)."""
        losses, stacked, reached = self.batching.losses_and_grads(
            ctx,
            closure,  # type: ignore[arg-type]
            self.sampler,
            self.num_samples,
        )
        ctx.reached = reached
        mask = None
        if self.nonfinite == "skip_sample":
            mask = finite_samples(losses, stacked)
            stacked = [
                torch.where(mask.view((-1,) + (1,) * (g.dim() - 1)), g, 0.0) for g in stacked
            ]
            weights = masked_weights(losses, mask, weight_tilt)
        else:
            weights = tilted_weights(losses, weight_tilt)
        grads = weighted_sum(weights, stacked)
        del stacked
        return self._conclude(grads, losses, mask, t, weight_tilt, None)

    def _conclude(
        self,
        grads: list[Tensor],
        losses: Tensor,
        mask: Tensor | None,
        t: float,
        weight_tilt: float,
        accumulator: TiltedAccumulator | None,
    ) -> Tensor:
        """Objective, the base step and the diagnostics, from the combined gradient."""
        if mask is not None:
            self._skipped_samples += (~mask).sum().to(self._skipped_samples.device)
            objective = _masked_objective(losses, mask, t)
            # Dropped losses are not the step's business any more; the shared check sees the
            # kept ones and a NaN when every sample was dropped (then the step is skipped).
            none_left = torch.where(mask.any(), 0.0, math.nan).to(losses).reshape(1)
            took = self._finish_step(grads, torch.cat([torch.where(mask, losses, 0.0), none_left]))
        else:
            # With weight tilt = t (delta = 0, the default) the accumulator's running max and
            # normaliser give the objective: a few scalar ops instead of a pass over the losses.
            if accumulator is not None and weight_tilt == t:
                objective = accumulator.log_mean_exp(losses)
            else:
                objective = tilted_objective(losses, t)
            took = self._finish_step(grads, losses)
        return self._diagnose(losses, objective, took, tilt=t, weight_tilt=weight_tilt, mask=mask)

    def _extra_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "skipped_samples": self.skipped_samples}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state.get("sampler", {}))
        self._skipped_samples.fill_(int(state.get("skipped_samples", 0)))

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [
            ("tilt", self.schedule.tilt),
            ("tilt_schedule", self.schedule.kind),
            ("num_samples", self.num_samples),
            ("rho", self.defaults["rho"]),
            ("noise_radius", self.defaults["noise_radius"]),
            ("sampler", self.sampler),
            ("delta", self.delta),
            ("batched", self.batching.mode),
        ]
