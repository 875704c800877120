"""Each baseline's update rule against a direct float64 re-implementation of its formula."""

import math

import pytest
import torch

from tiltedsam import ESAM2, PGN, RSAM, DetSAM, FrobSAM, TraceSAM

from .conftest import closure_for, make_mlp, make_regression

LR = 0.1


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def at(model, x, y, values):
    """Loss and gradient of ``model`` with its parameters set to ``values`` (then left there)."""
    params = list(model.parameters())
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), [g.detach() for g in grads]


def norm(tensors):
    return torch.sqrt(sum((t**2).sum() for t in tensors))


def run_and_compare(opt_factory, reference_grad, steps=3):
    """Step the optimizer and plain SGD with ``reference_grad(model, θ, gen)``; compare θ."""
    x, y = make_regression()
    model, ref = make_mlp(), make_mlp()
    opt = opt_factory(model.parameters())
    gen = torch.Generator().manual_seed(11)
    for _ in range(steps):
        opt.step(closure_for(model, x, y))
        theta = [p.detach().clone() for p in ref.parameters()]
        g = reference_grad(ref, x, y, theta, gen)
        with torch.no_grad():
            for p, th, gi in zip(ref.parameters(), theta, g, strict=True):
                p.copy_(th - LR * gi)
        torch.testing.assert_close(flat(model), flat(ref), rtol=1e-10, atol=1e-12)


def test_esam2_steps_with_the_gradient_at_the_worst_radius(float64):
    rhos = (0.05, 0.4, 1.5)
    chosen = []

    def reference(model, x, y, theta, gen):
        _, g0 = at(model, x, y, theta)
        u = [g / (norm(g0) + 1e-12) for g in g0]
        cands = [
            at(model, x, y, [t + r * ui for t, ui in zip(theta, u, strict=True)]) for r in rhos
        ]
        k = max(range(len(rhos)), key=lambda i: float(cands[i][0]))
        chosen.append(k)
        return cands[k][1]

    run_and_compare(
        lambda ps: (
            ESAM2(ps, torch.optim.SGD, rhos=rhos, lr=LR, seed=None)
            if False
            else ESAM2(ps, torch.optim.SGD, rhos=rhos, lr=LR)
        ),
        reference,
    )


@pytest.mark.parametrize("alpha", [0.3, 0.9])
def test_pgn_interpolates_clean_and_ascent_gradients(float64, alpha):
    def reference(model, x, y, theta, gen):
        _, g0 = at(model, x, y, theta)
        _, g1 = at(
            model, x, y, [t + 0.2 * g / (norm(g0) + 1e-12) for t, g in zip(theta, g0, strict=True)]
        )
        return [(1 - alpha) * a + alpha * b for a, b in zip(g0, g1, strict=True)]

    run_and_compare(lambda ps: PGN(ps, torch.optim.SGD, rho=0.2, alpha=alpha, lr=LR), reference)


def test_rsam_filterwise_noise_then_ascent(float64):
    sigma, lam, rho = 0.05, 2.0, 0.1

    def reference(model, x, y, theta, gen):
        delta = []
        for t in theta:
            z = torch.empty_like(t).normal_(generator=gen)
            if t.ndim > 1:
                scale = torch.sqrt((t**2).sum(dim=tuple(range(1, t.ndim)), keepdim=True))
            else:
                scale = torch.sqrt((t**2).sum())
            delta.append(sigma * z * scale)
        _, gd = at(model, x, y, [t + d for t, d in zip(theta, delta, strict=True)])
        v = [lam * g + d for g, d in zip(gd, delta, strict=True)]
        eps = [rho * vi / (norm(v) + 1e-12) for vi in v]
        return at(model, x, y, [t + e for t, e in zip(theta, eps, strict=True)])[1]

    run_and_compare(
        lambda ps: RSAM(ps, torch.optim.SGD, rho=rho, sigma=sigma, lam=lam, lr=LR, seed=11),
        reference,
    )


def _gaussian(theta, gen, rho):
    return [rho * torch.empty_like(t).normal_(generator=gen) for t in theta]


@pytest.mark.parametrize("n,lam", [(1, 1.0), (3, 0.5)])
def test_trace_sam(float64, n, lam):
    rho = 0.1

    def reference(model, x, y, theta, gen):
        _, g0 = at(model, x, y, theta)
        gs = [at(model, x, y, [t + e for t, e in zip(theta, _gaussian(theta, gen, rho), strict=True)])[1]
              for _ in range(n)]  # fmt: skip
        return [a + lam * sum(g[i] - a for g in gs) / n for i, a in enumerate(g0)]

    run_and_compare(
        lambda ps: TraceSAM(ps, torch.optim.SGD, rho=rho, lam=lam, num_samples=n, lr=LR, seed=11),
        reference,
    )


def test_frob_sam_uses_the_unbiased_loss_gradient_covariance(float64):
    rho, lam, n = 0.1, 0.02, 4

    def reference(model, x, y, theta, gen):
        _, g0 = at(model, x, y, theta)
        samples = [at(model, x, y, [t + e for t, e in zip(theta, _gaussian(theta, gen, rho), strict=True)])
                   for _ in range(n)]  # fmt: skip
        losses = torch.stack([s[0] for s in samples])
        out = []
        for i, a in enumerate(g0):
            gi = torch.stack([s[1][i] for s in samples])
            lc = (losses - losses.mean()).view(-1, *[1] * a.ndim)
            cov = (lc * (gi - gi.mean(0))).sum(0) / (n - 1)
            out.append(a + lam / rho**2 * cov)
        return out

    run_and_compare(
        lambda ps: FrobSAM(ps, torch.optim.SGD, rho=rho, lam=lam, num_samples=n, lr=LR, seed=11),
        reference,
    )


@pytest.mark.parametrize("n", [1, 3])
def test_det_sam_matches_the_psi_phi_formula(float64, n):
    rho, lam, h = 0.5, 0.3, 0.2

    def reference(model, x, y, theta, gen):
        loss0, g0 = at(model, x, y, theta)
        samples = []
        for _ in range(n):
            eps = [rho * h * torch.empty_like(t).uniform_(-1, 1, generator=gen) for t in theta]
            samples.append(at(model, x, y, [t + e for t, e in zip(theta, eps, strict=True)]))
        d = [(s[0] - loss0) / rho**2 for s in samples]
        psi = [torch.exp(-di / 2) for di in d]
        dpsi = [-0.5 * torch.exp(-di / 2) for di in d]
        c = sum(psi) / n
        dphi = -2 / c**3
        return [a + lam * dphi * sum(dpsi[j] / n * (samples[j][1][i] - a) for j in range(n))
                for i, a in enumerate(g0)]  # fmt: skip

    run_and_compare(
        lambda ps: DetSAM(
            ps, torch.optim.SGD, rho=rho, lam=lam, num_samples=n, half_cube=h, lr=LR, seed=11
        ),
        reference,
    )


def test_det_sam_stays_finite_where_the_direct_formula_overflows(float64):
    """Linear loss, tiny ρ: d_i = (L_i − L0)/ρ² is ~±1e6, so exp(−d/2) overflows directly.

    The gradient is constant, so g_i − g0 = 0 and the exact update is plain SGD with g0.
    """
    w = torch.linspace(-3, 3, 6, dtype=torch.float64)
    param = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = DetSAM([param], torch.optim.SGD, rho=1e-3, lam=1.0, num_samples=3, half_cube=1.0, lr=LR)

    seen = []

    def closure():
        loss = 1e3 * (w * param).sum()
        loss.backward()
        seen.append(float(loss.detach()))
        return loss

    opt.step(closure)
    d = [(loss - seen[0]) / 1e-6 for loss in seen[1:]]
    assert max(abs(v) for v in d) > 1500  # exp(-d/2) overflows float64 beyond |d| ≈ 1420
    torch.testing.assert_close(param.detach(), -LR * 1e3 * w, rtol=1e-12, atol=0)
    assert math.isfinite(float(param.detach().sum()))
