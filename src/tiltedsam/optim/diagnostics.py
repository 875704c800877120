r"""What the last step saw: ``opt.last_step``, the same object for every method.

Every optimizer of the package sets ``opt.last_step`` to a :class:`StepDiagnostics` at the end
of each ``step`` (``None`` before the first).  The fields are the same for every method:

* ``losses``: the losses at the step's perturbed points, the points whose gradients the update
  is made of, in the order they were evaluated (ERM: the loss at θ; SAM: :math:`L(\theta +
  \varepsilon)`; TSAM: the s perturbed losses :math:`L(\theta + \varepsilon_j)`; the per-method
  table is in ``docs/usage.md``);
* ``objective``: what ``step`` returned (TSAM: the tilted loss estimate; SAM: :math:`L(\theta)`);
* ``took_step``: whether the base optimizer stepped (False for a step skipped by a non-finite
  policy);
* ``weights`` and ``effective_sample_size`` (:math:`1/\sum_j w_j^2`) where the method weights
  its points (TSAM, ``tsam-resample``, ESAM2, Det-SAM), else ``None``;
* ``tilt`` and ``weight_tilt`` for the tilted methods, else ``None``.

Tensors stay on the device; ``weights`` and the effective sample size are computed on first
access, so a step that nobody inspects pays for nothing and never synchronises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from tiltedsam.tilt import effective_sample_size, tilted_weights


def masked_weights(losses: Tensor, mask: Tensor, t: float) -> Tensor:
    """``tilted_weights`` over the samples in ``mask``, 0 elsewhere (all 0 if there is none)."""
    # Dropped samples get the smallest kept loss (never above the max), then weight 0.
    filled = torch.where(mask, losses, torch.where(mask, losses, math.inf).amin())
    weights = tilted_weights(filled, t) * mask
    return torch.nan_to_num(weights / weights.sum(), nan=0.0)


@dataclass(kw_only=True)
class StepDiagnostics:
    """What the last step saw (see the module doc).

    ``weights`` are :math:`\\mathrm{softmax}(\\texttt{weight\\_tilt}\\cdot L)` of ``losses``
    (0 for samples dropped by ``mask``), or :math:`\\mathrm{softmax}(\\texttt{scores})` when the
    method's weights are not a tilt of its losses (Det-SAM: :math:`-d_i/2`)."""

    losses: Tensor
    objective: Tensor
    took_step: bool
    tilt: float | None = None
    weight_tilt: float | None = None
    mask: Tensor | None = None  # TSAM's nonfinite="skip_sample": which samples counted
    scores: Tensor | None = None  # the logits of the weights, where they are not t·losses

    @cached_property
    def weights(self) -> Tensor | None:
        """The weights of the step's points (summing to 1), or None for an unweighted method."""
        if self.scores is not None:
            return torch.softmax(self.scores, dim=-1)
        if self.weight_tilt is None:
            return None
        if self.mask is not None:
            return masked_weights(self.losses, self.mask, self.weight_tilt)
        return tilted_weights(self.losses, self.weight_tilt)

    @cached_property
    def effective_sample_size(self) -> Tensor | None:
        """Kish effective sample size :math:`1/\\sum_j w_j^2` of ``weights`` (None without)."""
        weights = self.weights
        return None if weights is None else effective_sample_size(weights)


__all__ = ["StepDiagnostics", "masked_weights"]
