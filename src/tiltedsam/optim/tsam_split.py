r"""Split-batch TSAM: the s perturbations share one batch, a shard each (issue #21).

TSAM's ascent estimator evaluates every perturbation :math:`\varepsilon_j` on the whole batch:
2s forward+backward passes of the batch per step, s times SAM's cost.  ``TSAMSplit`` (registry
name ``tsam-split``) cuts the batch into s shards :math:`B_1..B_s` and gives shard j its own
perturbation, found and evaluated on that shard only:

.. math::

    \xi_j \text{ of radius } r,\qquad
    \varepsilon_j = \xi_j + \rho\,\frac{\nabla L_{B_j}(\theta+\xi_j)}
                                    {\lVert\nabla L_{B_j}(\theta+\xi_j)\rVert},\qquad
    g = \sum_j w_j\, \nabla L_{B_j}(\theta+\varepsilon_j),\qquad
    w = \operatorname{softmax}(t\, k),

so a step costs two passes of the batch (the FLOPs of SAM) in 2s smaller passes.  The tilt then
weighs data as well as sharpness: shard j's key is

* ``tilt_on="loss"`` (default): :math:`k_j = L_{B_j}(\theta+\varepsilon_j)`, TSAM's key on the
  shard: a hard shard weighs more even where the landscape is flat;
* ``tilt_on="rise"``: :math:`k_j = L_{B_j}(\theta+\varepsilon_j) - L_{B_j}(\theta+\xi_j)`, how
  much the ascent raised the shard's loss (free: the first pass gives
  :math:`L_{B_j}(\theta+\xi_j)`), which removes the shard's own difficulty.

Shards of unequal size (a batch of N = 10 in 3 shards: 4, 3, 3) weigh by their share of the
batch, :math:`w \propto n_j e^{t k_j}`, and the returned objective is
:math:`\frac1t\log\sum_j \frac{n_j}{N} e^{t L_j}`; so at t = 0, g is the gradient of the batch
mean at shard-wise perturbed points, i.e. m-sharpness SAM (Foret et al.) with noise.  A batch of
fewer than s examples is cut into one shard per example (fewer perturbations that step).  With s = 1 it is TSAM with s = 1 (same noise,
same result).  BatchNorm statistics are per shard, as in m-sharpness; with ``model=`` the
running statistics are kept from the first pass only (``bn_update="first"``), i.e. shard 1's.

The closure: a :class:`~tiltedsam.closures.ModelClosure` (``make_closure(model, loss_fn, x, y)``)
is cut with its ``shards(s)``; or pass a sequence of (at most) s closures, one per shard, each
returning its shard's *mean* loss; a closure with a ``num_examples`` attribute (a
:class:`SizedClosure`, or a ``ModelClosure``) is weighted by it, else the shards count equally.  The s
shard passes run one after another: on a CPU, 2s small passes cost more than 2 large ones
(``docs/performance.md`` measures it); a ``vmap`` over shards (one call for the s shards, as
TSAM's batched path does for samples) is the way on a GPU and is not written yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._validation import check_choice
from tiltedsam.optim.diagnostics import StepDiagnostics, masked_weights
from tiltedsam.optim.tsam import TSAM
from tiltedsam.samplers import add_noise, ascend
from tiltedsam.tilt import TiltedAccumulator, tilted_objective, tilted_weights

TILT_ON = ("loss", "rise")


def shard_closures(closure: Any, num_shards: int) -> list[Callable[[], Tensor]]:
    """The per-shard closures of ``closure``: its ``shards(num_shards)`` (a ``ModelClosure``;
    fewer shards for a batch of fewer examples), or the sequence itself when it holds 1 to
    ``num_shards`` callables; a clear error otherwise."""
    if isinstance(closure, Sequence) and not isinstance(closure, str | bytes):
        if not 1 <= len(closure) <= num_shards:
            raise ValueError(
                f"tsam-split needs 1 to num_samples = {num_shards} shard closures (one per "
                f"shard of the batch), got a sequence of {len(closure)}"
            )
        bad = [i for i, c in enumerate(closure) if not callable(c)]
        if bad:
            raise TypeError(
                f"tsam-split: shard closure {bad[0]} is a {type(closure[bad[0]]).__name__}, "
                "not a callable that returns the shard's mean loss"
            )
        return list(closure)
    if hasattr(closure, "shards"):
        return closure.shards(num_shards)
    raise TypeError(
        "tsam-split evaluates each perturbation on its own shard of the batch: pass the closure "
        "from tiltedsam.make_closure(model, loss_fn, x, y) (it can cut the batch), or a list of "
        f"{num_shards} closures, one per shard"
    )


def shard_sizes(shards: Sequence[Any]) -> list[int] | None:
    """Each shard's ``num_examples`` (its weight in the batch mean), or None when a shard does
    not say (the shards then count equally); an empty shard is an error."""
    sizes = [getattr(shard, "num_examples", None) for shard in shards]
    if any(n is None for n in sizes):
        return None
    for j, n in enumerate(sizes):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"tsam-split: shard {j} holds {n!r} examples, must be an int >= 1")
    return sizes


class SizedClosure:
    """A shard closure with its ``num_examples``: ``fn()`` returns the shard's mean loss."""

    def __init__(self, fn: Callable[[], Tensor], num_examples: int) -> None:
        self.fn, self.num_examples = fn, num_examples

    def __call__(self) -> Tensor:
        return self.fn()


@dataclass(kw_only=True)
class SplitDiagnostics(StepDiagnostics):
    """``StepDiagnostics`` of the shards: ``losses`` at the perturbed points, ``keys`` what the
    weights softmax(t·key) were taken of (the losses, or the rises with ``tilt_on="rise"``)."""

    keys: Tensor | None = None
    prior: Tensor | None = None  # the shards' sizes (None: equal)

    @cached_property
    def weights(self) -> Tensor:
        keys = self.losses if self.keys is None else self.keys
        if self.mask is not None:
            weights = masked_weights(keys, self.mask, self.weight_tilt)
        else:
            weights = tilted_weights(keys, self.weight_tilt)
        if self.prior is None:
            return weights
        weighted = weights * self.prior.to(weights)  # softmax(t·k + log n_j)
        return weighted / weighted.sum()


class TSAMSplit(TSAM):
    r"""TSAM with the s perturbations on s shards of the batch (see the module doc).

    Args:
        params, base_optimizer_cls: as for :class:`~tiltedsam.optim.tsam.TSAM`.
        tilt: t in [0, inf]; the shard weights are softmax(t·key).
        num_samples: s >= 1 shards (and perturbations) per step.
        rho, noise_radius, noise: the ascent sampler's ρ and noise ξ (as TSAM's ``ascent``).
        tilt_on: ``"loss"`` or ``"rise"`` (the key of each shard; module doc).
        tilt_schedule, total_steps, model, bn_update, seed, nonfinite: as for TSAM
            (``nonfinite="skip_sample"`` drops a shard whose loss or gradient is not finite).
        **base_kwargs: passed to ``base_optimizer_cls``.

    Passes per step: 2s closure calls, each on a shard (two passes of the batch).  ``step``
    returns the tilted log-mean-exp of the shard losses at their perturbed points.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        *,
        tilt: float = 1.0,
        num_samples: int = 3,
        rho: float = 0.05,
        noise_radius: float = 1.0,
        noise: str = "gaussian",
        tilt_on: str = "loss",
        tilt_schedule: str = "constant",
        total_steps: int | None = None,
        model: nn.Module | None = None,
        bn_update: str = "first",
        seed: int | None = None,
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        self.tilt_on = check_choice("tilt_on", tilt_on, TILT_ON)
        super().__init__(
            params,
            base_optimizer_cls,
            tilt=tilt,
            num_samples=num_samples,
            rho=rho,
            noise_radius=noise_radius,
            sampler="ascent",
            noise=noise,
            tilt_schedule=tilt_schedule,
            total_steps=total_steps,
            model=model,
            bn_update=bn_update,
            seed=seed,
            nonfinite=nonfinite,
            batched=False,
            **base_kwargs,
        )

    @property
    def shards_per_step(self) -> int:
        """How many shards the closure is cut into (the harness passes a list of them)."""
        return self.num_samples

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor:  # type: ignore[override]
        """One split-batch step; ``closure`` is cut into s shards (see the module doc)."""
        if closure is None:
            self._require_closure(closure)  # the usual "step() requires a closure" error
        shards = shard_closures(closure, self.num_samples)
        sizes = shard_sizes(shards)
        equal = sizes is None or len(set(sizes)) == 1
        t = self.tilt
        ctx = self._begin_step()
        accumulator = TiltedAccumulator(t, buffers=ctx.buffer("tilted_grad"))
        per_sample = self.nonfinite == "skip_sample"
        losses, valid = [], []
        noise = self.sampler.noise
        for j, shard in enumerate(shards):
            prior = 1.0 if equal else float(sizes[j])
            add_noise(ctx, "noise_radius", noise)  # θ + ξ_j
            start = ctx.evaluate(shard)  # L_Bj(θ + ξ_j)
            ascend(ctx, ctx.grads(), "rho")  # θ + ε_j
            loss = ctx.evaluate(shard)  # L_Bj(θ + ε_j), its gradient
            losses.append(loss)
            key = loss - start if self.tilt_on == "rise" else loss
            grads = ctx.grads()
            if per_sample:
                valid.append(torch.isfinite(key) & _all_finite(grads))
                accumulator.add(key, grads, valid=valid[-1], prior=prior)
            else:
                accumulator.add(key, grads, prior=prior)
            del grads
            ctx.restore()
        mask = torch.stack(valid) if per_sample else None
        stacked = torch.stack(losses)
        keys = accumulator.stacked_losses().to(stacked.dtype)
        grads = accumulator.result()
        if mask is None:
            took = self._finish_step(grads, stacked)
        else:
            self._skipped_samples += (~mask).sum().to(self._skipped_samples.device)
            none_left = torch.where(mask.any(), 0.0, math.nan).to(stacked).reshape(1)
            took = self._finish_step(grads, torch.cat([torch.where(mask, stacked, 0.0), none_left]))
        prior = None if equal else torch.tensor(sizes, dtype=stacked.dtype, device=stacked.device)
        objective = tilted_objective(stacked, t, mask=mask, prior=prior)
        self.last_step = SplitDiagnostics(tilt=t, weight_tilt=t, losses=stacked,
                                          objective=objective, took_step=took, mask=mask,
                                          keys=keys, prior=prior)  # fmt: skip
        return objective

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [
            *super()._repr_items()[:5],
            ("noise", self.sampler.noise),
            ("tilt_on", self.tilt_on),
        ]


def _all_finite(grads: list[Tensor]) -> Tensor:
    return torch.stack([torch.isfinite(g).all() for g in grads]).all()


__all__ = [
    "TILT_ON",
    "SizedClosure",
    "SplitDiagnostics",
    "TSAMSplit",
    "shard_closures",
    "shard_sizes",
]
