"""The exact 1-D reference against finite differences, brute-force grids, and the TSAM estimator."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid

from tiltedsam import TSAM
from tiltedsam.toy import sam_objective, tilted_gradient_1d, tilted_objective_1d, torch_loss


@pytest.mark.parametrize("name,theta", [("wavy", 0.9), ("wavy", 1.6), ("kink", 1.9), ("kink", 2.9)])
@pytest.mark.parametrize("t", [0.0, 1.0, 5.0, 20.0])
def test_gradient_matches_finite_differences_of_objective(name, theta, t):
    h = 1e-5
    fd = (
        tilted_objective_1d(name, theta + h, t, 0.2) - tilted_objective_1d(name, theta - h, t, 0.2)
    ) / (2 * h)
    assert tilted_gradient_1d(name, theta, t, 0.2) == pytest.approx(fd, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("t", [0.0, 2.0, 10.0])
def test_objective_matches_brute_force_riemann_sum(t):
    u = np.linspace(1.4 - 0.2, 1.4 + 0.2, 400_001)
    values = 2 * np.sin(4 * np.pi * u) / (2 * u) + 0.005 * (u - 1) ** 2
    if t == 0:
        brute = trapezoid(values, u) / 0.4
    else:
        brute = math.log(trapezoid(np.exp(t * values), u) / 0.4) / t
    assert tilted_objective_1d("wavy", 1.4, t, 0.2) == pytest.approx(brute, abs=1e-6)


def test_limits_in_t():
    mean = tilted_objective_1d("kink", 2.0, 0.0, 0.5)
    tiny = tilted_objective_1d("kink", 2.0, 1e-7, 0.5)
    assert tiny == pytest.approx(mean, abs=1e-6)
    big = tilted_objective_1d("kink", 2.0, 1e4, 0.5)
    assert big == pytest.approx(sam_objective("kink", 2.0, 0.5), abs=1e-3)
    # L jumps from 0.99 to 1.0 at θ = 2; the sup over [1.5, 2.5] is 1.0 (approached from the right).
    assert sam_objective("kink", 2.0, 0.5) == pytest.approx(1.0, abs=1e-4)
    assert sam_objective("kink", 1.0, 0.3) == pytest.approx(0.29, abs=1e-9)


@pytest.mark.parametrize(
    "name,t,theta",
    [
        ("wavy", 1.0, 1.05),
        ("wavy", 5.0, 1.3),
        ("kink", 5.0, 1.05),
        ("kink", 20.0, 0.95),
        ("kink", 3.0, 2.9),
    ],
)
def test_uniform_sampler_estimator_converges_to_quadrature_gradient(float64, name, t, theta):
    """Self-normalised tilted gradient from 20000 uniform samples vs the exact quadrature gradient.

    The bound is 4 standard errors of the self-normalised estimator (delta method,
    SE² = Σ w_j² (g_j − ĝ)²), computed from the same samples; each case is also chosen so that
    a wrong tilt (t/2, the other weighting convention) lies outside it.
    """
    rho = 0.2
    loss_fn = torch_loss(name)
    param = torch.nn.Parameter(torch.tensor([theta]))
    opt = TSAM(
        [param],
        torch.optim.SGD,
        tilt=t,
        num_samples=20_000,
        rho=rho,
        sampler="uniform",
        lr=1.0,
        seed=123,
    )
    seen = []

    def closure():
        loss = loss_fn(param).sum()
        loss.backward()
        seen.append((float(loss.detach()), float(param.grad)))
        return loss

    objective = opt.step(closure)
    losses, grads = np.array(seen).T
    w = np.exp(t * (losses - losses.max()))
    w /= w.sum()
    estimate = float(param.grad)
    assert estimate == pytest.approx(float((w * grads).sum()), rel=1e-9, abs=1e-12)
    se = math.sqrt(float((w**2 * (grads - estimate) ** 2).sum()))
    exact = tilted_gradient_1d(name, theta, t, rho)
    assert abs(estimate - exact) < 4 * se + 1e-9
    assert abs(tilted_gradient_1d(name, theta, t / 2, rho) - exact) > 4 * se
    assert float(param.detach()) == pytest.approx(theta - estimate, abs=1e-12)  # SGD(lr=1) stepped
    assert float(objective) == pytest.approx(tilted_objective_1d(name, theta, t, rho), abs=0.02)


@pytest.mark.parametrize("name,theta", [("wavy", 0.8), ("kink", 2.0), ("kink", 1.0)])
def test_objective_is_monotone_in_t_at_fixed_theta(name, theta):
    values = [
        tilted_objective_1d(name, theta, t, 0.3) for t in [0, 0.5, 1, 2, 5, 20, 100, math.inf]
    ]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values))


def test_wavy_is_finite_through_theta_zero():
    """2 sin(4πθ)/(2θ) → 4π at θ = 0: a window that contains 0 gives finite objectives (the
    quotient gave NaN there, and the window's max picked it)."""
    from tiltedsam.toy import TOY_LOSSES

    wavy = TOY_LOSSES["wavy"]
    thetas = np.array([-1e-3, 0.0, 1e-3, 0.3])
    direct = np.where(
        thetas == 0, 4 * np.pi, np.sin(4 * np.pi * thetas) / np.where(thetas == 0, 1, thetas)
    )
    assert np.allclose(wavy(thetas), direct + 0.005 * (thetas - 1) ** 2, rtol=1e-12, atol=0)
    for theta in (0.1, 0.2):
        values = [tilted_objective_1d("wavy", theta, t, 0.2) for t in (0.0, 1.0, 20.0)]
        values += [tilted_gradient_1d("wavy", theta, 1.0, 0.2), sam_objective("wavy", theta, 0.2)]
        assert np.all(np.isfinite(values))
    assert sam_objective("wavy", 0.1, 0.2) == pytest.approx(4 * np.pi + 0.005, rel=1e-6)
    th = torch.tensor([0.0, 0.3], dtype=torch.float64, requires_grad=True)
    torch_loss("wavy")(th).sum().backward()
    assert torch.isfinite(th.grad).all()
