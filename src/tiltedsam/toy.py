r"""Exact 1-D toy problems: the TSAM objective and its gradient by numerical quadrature.

For ε uniform on :math:`[-\rho, \rho]`, substituting :math:`u = \theta + \varepsilon`,

.. math::

    L^t(\theta) = \frac1t \log \frac{1}{2\rho}\int_{\theta-\rho}^{\theta+\rho} e^{tL(u)}\,du,
    \qquad
    \frac{d}{d\theta}L^t(\theta) = \frac{1}{t}\,
        \frac{e^{tL(\theta+\rho)} - e^{tL(\theta-\rho)}}{\int_{\theta-\rho}^{\theta+\rho} e^{tL(u)}\,du}

(Leibniz rule), so the reference gradient needs no derivative of L at all and is exact at kinks.
The integrals are taken with ``scipy.integrate.quad`` on :math:`e^{t(L(u) - m)}`, m the max of L on
a fine grid of the window, so nothing overflows.  Limits: t = 0 gives the window mean of L and
:math:`(L(\theta+\rho) - L(\theta-\rho))/2\rho`; t = inf gives SAM's :math:`\max_{|\varepsilon|\le\rho}`.

Losses (SPEC §4): ``wavy`` (paper Fig. 1), :math:`L(\theta) = 2\sin(4\pi\theta)/(2\theta) +
0.005(\theta-1)^2`, and ``kink`` (paper Fig. 5/6), :math:`L(\theta) = |\theta - 1| - 0.01` for
θ ≤ 2, else :math:`(\theta - 3)^2`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize

from tiltedsam._validation import check_nonnegative, check_positive, check_tilt

__all__ = [
    "TOY_LOSSES",
    "ToyLoss",
    "sam_objective",
    "tilted_gradient_1d",
    "tilted_objective_1d",
    "torch_loss",
]


@dataclass(frozen=True)
class ToyLoss:
    """A 1-D loss with its kinks (points where quadrature must split) and its plotting window."""

    name: str
    fn: Callable[[np.ndarray | float], np.ndarray | float]
    kinks: tuple[float, ...]
    window: tuple[float, float]

    def __call__(self, theta: np.ndarray | float) -> np.ndarray | float:
        return self.fn(theta)


def _wavy(theta):
    theta = np.asarray(theta, dtype=float)
    # 2 sin(4πθ)/(2θ) = 4π sinc(4θ) (numpy's sinc(x) = sin(πx)/(πx)): finite at θ = 0 (4π)
    return 4.0 * np.pi * np.sinc(4.0 * theta) + 0.005 * (theta - 1.0) ** 2


def _kink(theta):
    theta = np.asarray(theta, dtype=float)
    return np.where(theta <= 2.0, np.abs(theta - 1.0) - 0.01, (theta - 3.0) ** 2)


TOY_LOSSES: dict[str, ToyLoss] = {
    "wavy": ToyLoss("wavy", _wavy, (), (0.2, 2.5)),
    "kink": ToyLoss("kink", _kink, (1.0, 2.0), (0.0, 4.0)),
}


def _loss(loss: ToyLoss | str) -> ToyLoss:
    if isinstance(loss, str):
        if loss not in TOY_LOSSES:
            raise ValueError(f"loss must be one of {sorted(TOY_LOSSES)}, got {loss!r}")
        return TOY_LOSSES[loss]
    return loss


def _window_max(loss: ToyLoss, a: float, b: float) -> float:
    grid = np.linspace(a, b, 2049)
    values = np.asarray(loss(grid))
    i = int(np.argmax(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = float(values[i])
    if hi > lo:
        res = optimize.minimize_scalar(lambda u: -float(loss(u)), bounds=(lo, hi), method="bounded")
        best = max(best, -float(res.fun))
    for k in loss.kinks:
        if a <= k <= b:
            best = max(best, float(loss(k)))
    return max(best, float(loss(a)), float(loss(b)))


def _log_integral(loss: ToyLoss, t: float, a: float, b: float, shift: float) -> float:
    """log ∫_a^b exp(t (L(u) - shift)) du, by adaptive quadrature split at kinks."""
    points = [k for k in loss.kinks if a < k < b]
    edges = [a, *points, b]
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        value, _ = integrate.quad(
            lambda u: math.exp(t * (float(loss(u)) - shift)),
            lo,
            hi,
            limit=500,
            epsabs=0.0,
            epsrel=1e-12,
        )
        total += value
    return math.log(total)


def sam_objective(loss: ToyLoss | str, theta: float, rho: float) -> float:
    r"""SAM's :math:`\max_{|\varepsilon| \le \rho} L(\theta + \varepsilon)`."""
    loss = _loss(loss)
    rho = check_nonnegative("rho", rho)
    if rho == 0:
        return float(loss(theta))
    return _window_max(loss, theta - rho, theta + rho)


def tilted_objective_1d(loss: ToyLoss | str, theta: float, t: float, rho: float) -> float:
    r"""Exact :math:`L^t(\theta)` for ε uniform on [−ρ, ρ] (ρ > 0)."""
    loss = _loss(loss)
    t = check_tilt(t)
    rho = check_positive("rho", rho)
    a, b = theta - rho, theta + rho
    if math.isinf(t):
        return _window_max(loss, a, b)
    if t == 0:
        value, _ = integrate.quad(
            lambda u: float(loss(u)),
            a,
            b,
            points=[k for k in loss.kinks if a < k < b] or None,
            limit=500,
        )
        return value / (2 * rho)
    shift = _window_max(loss, a, b)
    return shift + (_log_integral(loss, t, a, b, shift) - math.log(2 * rho)) / t


def tilted_gradient_1d(loss: ToyLoss | str, theta: float, t: float, rho: float) -> float:
    r"""Exact :math:`\frac{d}{d\theta} L^t(\theta)` for ε uniform on [−ρ, ρ], t finite."""
    loss = _loss(loss)
    t = check_tilt(t)
    rho = check_positive("rho", rho)
    if math.isinf(t):
        raise ValueError("tilted_gradient_1d needs a finite tilt t; the t=inf objective is a max")
    a, b = theta - rho, theta + rho
    if t == 0:
        return (float(loss(b)) - float(loss(a))) / (2 * rho)
    shift = _window_max(loss, a, b)
    log_z = _log_integral(loss, t, a, b, shift)
    upper = math.exp(t * (float(loss(b)) - shift) - log_z)
    lower = math.exp(t * (float(loss(a)) - shift) - log_z)
    return (upper - lower) / t


def torch_loss(loss: ToyLoss | str):
    """The same loss on torch tensors (for autograd and the stochastic estimators)."""
    import torch

    name = _loss(loss).name
    if name == "wavy":
        return lambda th: 4.0 * math.pi * torch.sinc(4.0 * th) + 0.005 * (th - 1.0) ** 2
    return lambda th: torch.where(th <= 2.0, (th - 1.0).abs() - 0.01, (th - 3.0) ** 2)
