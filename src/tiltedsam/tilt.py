r"""Exponential tilting in log space.

For losses :math:`L_1..L_n` of perturbed parameters and a tilt :math:`t \ge 0`:

* tilted weights (paper Def. 1, normalised over the sample):
  :math:`w_j = e^{tL_j} / \sum_k e^{tL_k} = \mathrm{softmax}(tL)_j`;
* tilted objective (paper Eq. 3, Monte-Carlo form):
  :math:`L^t = \frac1t \log \frac1n \sum_j e^{tL_j}` (log-mean-exp);
* t-weighted mean and variance (paper Def. 2): :math:`\sum_j w_j L_j` and
  :math:`\sum_j w_j L_j^2 - (\sum_j w_j L_j)^2`;
* t-sharpness (paper Def. 3): the t-weighted variance.  ``tilted_gap`` gives the other common
  reading, :math:`L^t(\theta) - L(\theta)` (used in SPEC.md); both are exposed.

Limits: ``t = 0`` gives equal weights exactly and the plain mean; ``t = inf`` gives the argmax
(ties share the weight equally) and the max.  Every exponential is taken of ``t * (L - max L)``,
which is ``<= 0``, so ``t * L = 1e5`` (or ``t = 1e30``) never overflows.  A finite t above the
losses' dtype's largest value (``t = 1e39`` with float32 losses) is that limit too: ``t * 0``
would be NaN.  For small t the objective is computed around the mean in float64,
:math:`\bar L + \frac1t \operatorname{log1p}(\frac1n\sum_j \operatorname{expm1}(t(L_j-\bar L)))`,
so ``t = 1e-8`` gives :math:`\bar L + \frac t2 \operatorname{var} L` and not the max (the
max-shifted form rounds :math:`\log(S/n)` to 0 there); the form is chosen on the device, with
no host synchronisation.

The Monte-Carlo log-mean-exp is biased low for finite ``n`` (Jensen); callers report ``n``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tiltedsam._tensors import no_grad
from tiltedsam._validation import check_tilt

__all__ = [
    "TiltedAccumulator",
    "effective_sample_size",
    "t_sharpness",
    "tilted_gap",
    "tilted_mean",
    "tilted_objective",
    "tilted_variance",
    "tilted_weights",
]


def _as_losses(losses: Tensor | list[float]) -> Tensor:
    values = torch.as_tensor(losses)
    if not values.is_floating_point():
        values = values.to(torch.get_default_dtype())
    if values.ndim == 0 or values.shape[-1] == 0:
        raise ValueError(f"losses must hold at least one value on the last dim, got {values.shape}")
    return values


def is_max_limit(t: float, dtype: torch.dtype) -> bool:
    """Whether tilt ``t`` acts as t = inf on losses of ``dtype`` (inf, or too large for it)."""
    return math.isinf(t) or t > torch.finfo(dtype).max


def tilted_weights(losses: Tensor | list[float], t: float) -> Tensor:
    r"""Weights :math:`\mathrm{softmax}(tL)` along the last dim, computed as ``softmax(t(L - max L))``."""
    t = check_tilt(t)
    losses = _as_losses(losses)
    if t == 0.0:
        return torch.full_like(losses, 1.0 / losses.shape[-1])
    top = losses.amax(dim=-1, keepdim=True)
    if is_max_limit(t, losses.dtype):
        is_top = (losses == top).to(losses.dtype)
        return is_top / is_top.sum(dim=-1, keepdim=True)
    return torch.softmax(t * (losses - top), dim=-1)


def tilted_objective(
    losses: Tensor | list[float],
    t: float,
    mask: Tensor | None = None,
    prior: Tensor | None = None,
) -> Tensor:
    r""":math:`\frac1t\log\frac1n\sum_j e^{tL_j}` along the last dim; mean at t=0, max at t=inf.

    With a boolean ``mask`` (same shape), only the losses where it is True count (others may be
    NaN or inf); NaN where none counts.  With ``prior`` (positive, same shape) the mean is the
    weighted one, :math:`\frac1t\log\sum_j q_j e^{tL_j}` with :math:`q = p/\sum_k p_k` over
    the losses that count (``tsam-split``'s shards of unequal size)."""
    t = check_tilt(t)
    losses = _as_losses(losses)
    if prior is not None:
        keep = torch.ones_like(losses, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        return _masked_log_mean_exp(losses, keep, t, prior)
    if mask is not None:
        return _masked_log_mean_exp(losses, mask.to(torch.bool), t)
    if t == 0.0:
        return losses.mean(dim=-1)
    top = losses.amax(dim=-1)
    if is_max_limit(t, losses.dtype):
        return top
    return _log_mean_exp(losses, t).to(losses.dtype)


def _log_mean_exp(losses: Tensor, t: float) -> Tensor:
    r""":math:`\frac1t\log\frac1n\sum_j e^{tL_j}` in float64 for finite t > 0: around the mean
    (expm1/log1p) where :math:`t(\max L - \bar L) \le 1`, else around the max (logsumexp)."""
    return _masked_log_mean_exp(losses, torch.ones_like(losses, dtype=torch.bool), t)


def _masked_log_mean_exp(
    losses: Tensor, mask: Tensor, t: float, prior: Tensor | None = None
) -> Tensor:
    """:func:`_log_mean_exp` over the entries in ``mask``; t = 0 and t = inf included; with
    ``prior`` the weighted mean (weights ``prior`` over the kept entries)."""
    x = losses.to(torch.float64)
    if prior is None:
        p = torch.ones_like(x)
    else:
        p = torch.as_tensor(prior, dtype=torch.float64, device=x.device).expand_as(x)
        if not bool(((p > 0) & torch.isfinite(p)).all()):
            raise ValueError("prior must hold finite numbers > 0")
    weight = torch.where(mask, p, 0.0)
    count = weight.sum(dim=-1)  # the number kept when every prior is 1
    kept = torch.where(mask, x * p, 0.0)
    mean = kept.sum(dim=-1) / count  # NaN where nothing is kept
    if t == 0.0:
        return mean.to(losses.dtype)
    top = torch.where(mask, x, -math.inf).amax(dim=-1)
    nothing = torch.full_like(mean, math.nan)
    if is_max_limit(t, losses.dtype):
        return torch.where(count > 0, top, nothing).to(losses.dtype)
    # Around the mean: every kept t(L - mean) <= t(max - mean) <= 1 where this form is used.
    centred = torch.where(mask, t * (x - mean.unsqueeze(-1)), 0.0).clamp(max=1.0)
    rise = torch.where(mask, torch.expm1(centred) * p, 0.0).sum(-1)
    near = mean + torch.log1p(rise / count) / t
    shifted = torch.where(mask, t * (x - top.unsqueeze(-1)) + torch.log(p), -math.inf)
    far = top + (torch.logsumexp(shifted, dim=-1) - torch.log(count)) / t
    out = torch.where(t * (top - mean) <= 1.0, near, far)
    return torch.where(count > 0, out, nothing).to(losses.dtype)


def tilted_mean(losses: Tensor | list[float], t: float) -> Tensor:
    r"""t-weighted mean :math:`\sum_j w_j L_j` (paper Def. 2)."""
    losses = _as_losses(losses)
    return (tilted_weights(losses, t) * losses).sum(dim=-1)


def tilted_variance(losses: Tensor | list[float], t: float) -> Tensor:
    r"""t-weighted variance :math:`\sum_j w_j (L_j - \bar L_t)^2` (paper Def. 2)."""
    losses = _as_losses(losses)
    weights = tilted_weights(losses, t)
    mean = (weights * losses).sum(dim=-1, keepdim=True)
    return (weights * (losses - mean) ** 2).sum(dim=-1)


def t_sharpness(losses: Tensor | list[float], t: float) -> Tensor:
    """t-sharpness as in paper Def. 3: the t-weighted variance of the perturbed losses."""
    return tilted_variance(losses, t)


def tilted_gap(losses: Tensor | list[float], clean_loss: Tensor | float, t: float) -> Tensor:
    r""":math:`L^t(\theta) - L(\theta)`: how much the tilted neighbourhood loss exceeds the loss at θ."""
    objective = tilted_objective(losses, t)
    return objective - torch.as_tensor(clean_loss, dtype=objective.dtype)


def effective_sample_size(weights: Tensor) -> Tensor:
    r"""Kish effective sample size :math:`1/\sum_j w_j^2` of normalised weights (last dim)."""
    return 1.0 / (weights**2).sum(dim=-1)


class TiltedAccumulator:
    r"""Streaming :math:`\sum_j \mathrm{softmax}(tL)_j\, g_j` that folds in one (loss, gradient) pair at a time.

    ``buffers`` (optional, shaped like ``grads``) receive the running average, so a caller can
    reuse preallocated memory across steps.

    Keeps the running max :math:`m` of the losses and :math:`S = \sum_{k\le j} e^{t(L_k - m)}`,
    so no exponential of an unshifted :math:`tL` is taken, and the *normalised* running average
    :math:`A_j = \sum_{k\le j} \mathrm{softmax}(tL_{1..j})_k\, g_k`, updated in one pass over
    the gradient memory: :math:`A_j = A_{j-1} + w_j (g_j - A_{j-1})` (``torch._foreach_lerp_``
    with 0-dim tensor weights, no ``.item()``), :math:`w_j = e^{t(L_j - m_j)}/S_j` being the new
    sample's weight among the first j.  Memory is one gradient-sized buffer, independent of the
    number of samples; all arithmetic stays on the device (no host synchronisation).

    ``t = 0`` uses the exact weight :math:`1/j` (a Python float); with ``t = inf`` the factor
    :math:`e^{t x}` (``x <= 0``) becomes the indicator ``x == 0``, so :math:`A` is the mean
    gradient over the samples that tie for the largest loss.  The first sample is copied, so
    with one sample the result is its gradient bit for bit.
    """

    def __init__(self, t: float, buffers: list[Tensor] | None = None) -> None:
        self.t = check_tilt(t)
        self._buffers = buffers
        self.num_samples = 0
        self._max: Tensor | None = None
        self._norm: Tensor | None = None
        self._sum: list[Tensor] | None = None
        self.losses: list[Tensor] = []
        self._masked = False
        self._valid: list[Tensor] = []
        self._priors: list[float] = []  # p_j of each sample (1 unless given)
        self._prior_sum = 0.0

    def _factor(self, diff: Tensor) -> Tensor:
        """``exp(t * diff)`` for ``diff <= 0``; exact 1 at t=0, indicator at t=inf (and for a
        t beyond ``diff``'s dtype, where ``t * 0`` would be NaN)."""
        if is_max_limit(self.t, diff.dtype):
            return (diff == 0).to(diff.dtype)
        return torch.exp(self.t * diff)

    @no_grad
    def add(
        self,
        loss: Tensor,
        grads: list[Tensor],
        valid: Tensor | None = None,
        prior: float = 1.0,
    ) -> None:
        r"""Fold in one perturbed loss and its gradients (``grads`` are read, not modified,
        except with ``valid``).

        ``valid`` (a 0-dim bool tensor) marks whether the sample counts: a sample with
        ``valid=False`` gets weight 0 (it changes neither the max, the normaliser nor the
        average; its loss and gradients may be NaN or inf, the gradients are zeroed in place).
        Once any sample was added with ``valid``, pass it for every later one.

        ``prior`` :math:`p_j > 0` weighs the sample before the tilt: the weights become
        :math:`p_j e^{tL_j} / \sum_k p_k e^{tL_k}` (``tsam-split``: a shard's share of the
        batch, so that t = 0 gives the batch mean over shards of unequal size).  With every
        prior 1 (the default) the arithmetic is the unweighted one, bit for bit.
        """
        prior = float(prior)
        if not prior > 0.0 or math.isinf(prior):
            raise ValueError(f"prior must be a finite number > 0, got {prior}")
        loss = loss.detach().to(torch.float64 if loss.dtype == torch.float64 else torch.float32)
        self._priors.append(prior)
        self._prior_sum += prior
        if valid is not None:
            self._add_masked(loss, grads, valid, prior)
            return
        self.losses.append(loss)
        self.num_samples += 1
        if self._sum is None:
            self._start(grads)
            self._max, self._norm = loss, torch.full_like(loss, prior)
            return
        if self.t == 0.0:
            torch._foreach_lerp_(self._sum, grads, prior / self._prior_sum)
            return
        new_max = torch.maximum(self._max, loss)
        new_scale = self._factor(loss - new_max) * prior
        self._norm = torch.addcmul(new_scale, self._norm, self._factor(self._max - new_max))
        self._max = new_max
        # A list of 0-dim weights (the ``.List`` overload): a 0-dim tensor passed as a single
        # weight would be read on the host (``.item()``), a synchronisation on CUDA.
        weight = (new_scale / self._norm).to(self._sum[0].dtype)
        torch._foreach_lerp_(self._sum, grads, [weight] * len(self._sum))

    def _start(self, grads: list[Tensor]) -> None:
        """The first sample: its gradients become the running average (copied)."""
        if self._buffers is None:
            self._sum = [g.clone() for g in grads]
        else:
            torch._foreach_copy_(self._buffers, grads)
            self._sum = self._buffers

    def _add_masked(self, loss: Tensor, grads: list[Tensor], valid: Tensor, prior: float) -> None:
        self.losses.append(loss)
        self.num_samples += 1
        valid = valid.to(device=loss.device, dtype=torch.bool)
        self._masked = True
        self._valid.append(valid)
        masked = torch.where(valid, loss, torch.full_like(loss, -math.inf))
        for g in grads:
            g.masked_fill_(~valid.to(g.device), 0.0)
        if self._sum is None:
            self._start(grads)
            self._max, self._norm = masked, valid.to(loss.dtype) * prior
            return
        new_max = torch.maximum(self._max, masked)
        # While no sample counted yet, the max is -inf, S = 0 and the average 0: any finite
        # factor works; the new sample's weight is then 1 (or 0 if it does not count either).
        old_factor = self._factor(torch.where(self._max > -math.inf, self._max - new_max, 0.0))
        new_scale = self._factor(torch.where(valid, loss - new_max, 0.0)) * valid * prior
        self._norm = torch.addcmul(new_scale, self._norm, old_factor)
        self._max = new_max
        weight = torch.where(self._norm > 0, new_scale / self._norm, 0.0).to(self._sum[0].dtype)
        torch._foreach_lerp_(self._sum, grads, [weight] * len(self._sum))

    @no_grad
    def result(self) -> list[Tensor]:
        r"""The tilted average of the gradients folded in so far (the running buffer itself)."""
        if self._sum is None:
            raise RuntimeError("TiltedAccumulator.result() called before any add()")
        return self._sum

    def stacked_losses(self) -> Tensor:
        return torch.stack(self.losses)

    def log_mean_exp(self, losses: Tensor | None = None) -> Tensor:
        r""":math:`\frac1t\log\frac1n\sum_j e^{tL_j}` at this accumulator's t (mean at t = 0,
        max at t = inf), from the stacked losses (``losses``, if the caller has them) in float64
        (:func:`tilted_objective`): a few operations on s numbers, on the device.  Not from the
        running :math:`m + \log(S/n)/t`, whose float32 rounding of :math:`S` is amplified by
        :math:`1/t` (an error of about :math:`6\cdot10^{-8}/t`, larger than the tilt's own effect
        for t below about 0.1)."""
        if not self.losses:
            raise RuntimeError("TiltedAccumulator.log_mean_exp() called before any add()")
        stacked = self.stacked_losses() if losses is None else losses
        prior = self.priors(stacked)
        if self._masked:  # over the samples that counted only
            valid = torch.stack(self._valid).to(stacked.device)
            return tilted_objective(stacked, self.t, mask=valid, prior=prior)
        return tilted_objective(stacked, self.t, prior=prior)

    def priors(self, like: Tensor | None = None) -> Tensor | None:
        """The samples' priors as a tensor (like ``like``), or None when every one is 1."""
        if all(p == 1.0 for p in self._priors):
            return None
        ref = like if like is not None else self.stacked_losses()
        return torch.tensor(self._priors, dtype=ref.dtype, device=ref.device)
