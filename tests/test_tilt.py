"""Tilt math against brute-force float64 formulas."""

import itertools
import math

import numpy as np
import pytest
import torch

from tiltedsam.tilt import (
    TiltedAccumulator,
    effective_sample_size,
    t_sharpness,
    tilted_gap,
    tilted_mean,
    tilted_objective,
    tilted_variance,
    tilted_weights,
)

LOSSES = torch.tensor([0.3, 1.7, 0.9, 1.2, 0.05], dtype=torch.float64)


def brute_weights(losses, t):
    e = np.exp(t * np.asarray(losses, dtype=np.float64))
    return e / e.sum()


@pytest.mark.parametrize("t", [0.1, 1.0, 5.0, 20.0])
def test_weights_match_direct_exponentials(t):
    np.testing.assert_allclose(tilted_weights(LOSSES, t).numpy(), brute_weights(LOSSES, t), 1e-13)


def test_t_zero_gives_exactly_equal_weights_and_the_mean():
    w = tilted_weights(LOSSES, 0.0)
    assert torch.equal(w, torch.full_like(LOSSES, 0.2))
    assert tilted_objective(LOSSES, 0.0) == LOSSES.mean()


def test_small_t_is_mean_plus_half_t_variance():
    t = 1e-4
    expected = LOSSES.mean() + t / 2 * LOSSES.var(unbiased=False)
    assert abs(float(tilted_objective(LOSSES, t) - expected)) < 1e-9


def test_t_inf_gives_argmax_and_splits_ties():
    assert torch.equal(tilted_weights(LOSSES, math.inf), torch.tensor([0, 1.0, 0, 0, 0]).double())
    tied = torch.tensor([1.0, 3.0, 3.0, 2.0], dtype=torch.float64)
    assert torch.equal(tilted_weights(tied, math.inf), torch.tensor([0, 0.5, 0.5, 0]).double())
    assert tilted_objective(tied, math.inf) == 3.0


def test_large_t_approaches_max():
    assert abs(float(tilted_objective(LOSSES, 1e6)) - 1.7) < 1e-5


def test_objective_matches_log_mean_exp_and_is_monotone_in_t():
    for t in [0.5, 2.0, 10.0]:
        direct = math.log(np.mean(np.exp(t * LOSSES.numpy()))) / t
        assert abs(float(tilted_objective(LOSSES, t)) - direct) < 1e-12
    values = [float(tilted_objective(LOSSES, t)) for t in [0, 0.5, 1, 5, 20, 100, math.inf]]
    assert all(a <= b + 1e-15 for a, b in itertools.pairwise(values))


def test_no_overflow_for_huge_tilted_losses():
    losses = torch.tensor([1e4, 1e4 - 1.0, 0.0], dtype=torch.float32)
    w = tilted_weights(losses, 10.0)  # t*L = 1e5: exp would overflow float32 and float64
    assert torch.isfinite(w).all()
    assert abs(float(w[0]) - 1 / (1 + math.exp(-10))) < 1e-6
    assert (
        abs(float(tilted_objective(losses, 10.0)) - (1e4 + math.log((1 + math.exp(-10)) / 3) / 10))
        < 1e-2
    )


def test_weighted_mean_variance_match_definition_2():
    for t in [0.0, 1.0, 3.0]:
        w = brute_weights(LOSSES, t)
        mean = float((w * LOSSES.numpy()).sum())
        var = float((w * LOSSES.numpy() ** 2).sum()) - mean**2
        assert abs(float(tilted_mean(LOSSES, t)) - mean) < 1e-13
        assert abs(float(tilted_variance(LOSSES, t)) - var) < 1e-13
        assert float(t_sharpness(LOSSES, t)) == float(tilted_variance(LOSSES, t))
    gap = tilted_gap(LOSSES, 0.1, 2.0)
    assert abs(float(gap) - (float(tilted_objective(LOSSES, 2.0)) - 0.1)) < 1e-15


def test_effective_sample_size_bounds():
    assert float(effective_sample_size(tilted_weights(LOSSES, 0.0))) == pytest.approx(5.0)
    assert float(effective_sample_size(tilted_weights(LOSSES, math.inf))) == pytest.approx(1.0)


@pytest.mark.parametrize("t", [0.0, 0.7, 5.0, 50.0, 1e5, math.inf])
def test_streaming_accumulator_equals_direct_weighted_sum(t):
    g = torch.Generator().manual_seed(1)
    losses = torch.tensor([0.4, 2.0, 1.1, 2.0, 0.9, 3.5, 0.2], dtype=torch.float64)
    grads = [
        [
            torch.randn(4, 3, generator=g, dtype=torch.float64),
            torch.randn(3, generator=g, dtype=torch.float64),
        ]
        for _ in losses
    ]
    acc = TiltedAccumulator(t)
    for loss, gr in zip(losses, grads, strict=True):
        acc.add(loss, [x.clone() for x in gr])
    result = acc.result()
    w = tilted_weights(losses, t)
    for i in range(2):
        direct = sum(w[j] * grads[j][i] for j in range(len(losses)))
        torch.testing.assert_close(result[i], direct, rtol=1e-12, atol=1e-13)


def test_accumulator_single_sample_is_the_gradient_bit_for_bit():
    g = [torch.randn(5, dtype=torch.float32)]
    acc = TiltedAccumulator(3.0)
    acc.add(torch.tensor(0.7), [g[0].clone()])
    assert torch.equal(acc.result()[0], g[0])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "1", None])
def test_bad_tilt_is_rejected_with_its_name(bad):
    with pytest.raises((ValueError, TypeError), match="tilt"):
        tilted_weights(LOSSES, bad)


def _prior_reference(losses: list[float], prior: list[float], t: float) -> tuple[list, float]:
    """Weights p_j e^{tL_j} / Σ p_k e^{tL_k} and (1/t) log Σ (p_j/P) e^{tL_j}, 60 digits."""
    import mpmath

    with mpmath.workdps(60 + max(0, int(-math.log10(t))) if 0 < t < 1 else 60):
        P = mpmath.fsum(prior)
        if t == 0.0:
            w = [mpmath.mpf(p) / P for p in prior]
            return w, float(
                mpmath.fsum(mpmath.mpf(p) * x for p, x in zip(prior, losses, strict=True)) / P
            )
        if math.isinf(t):
            top = max(losses)
            ties = [p if x == top else 0.0 for p, x in zip(prior, losses, strict=True)]
            return [mpmath.mpf(q) / mpmath.fsum(ties) for q in ties], top
        e = [
            mpmath.mpf(p) * mpmath.exp(t * mpmath.mpf(x))
            for p, x in zip(prior, losses, strict=True)
        ]
        total = mpmath.fsum(e)
        return [v / total for v in e], float(mpmath.log(total / P) / t)


@pytest.mark.parametrize("t", [0.0, 1e-9, 0.5, 3.0, 80.0, math.inf])
def test_accumulator_and_objective_with_priors_match_the_weighted_formula(t):
    """``tsam-split``'s shards of unequal size: weights ∝ p_j e^{tL_j}, the objective the
    p-weighted log-mean-exp; the accumulator (streaming) and ``tilted_objective`` (batch)."""
    gen = torch.Generator().manual_seed(3)
    losses = (torch.rand(5, generator=gen, dtype=torch.float64) * 2).tolist()
    prior = [4.0, 3.0, 3.0, 1.0, 7.0]
    grads = [torch.randn(6, generator=gen, dtype=torch.float64) for _ in losses]
    weights, objective = _prior_reference(losses, prior, t)
    acc = TiltedAccumulator(t)
    for loss, g, p in zip(losses, grads, prior, strict=True):
        acc.add(torch.tensor(loss, dtype=torch.float64), [g.clone()], prior=p)
    expected = sum(float(w) * g for w, g in zip(weights, grads, strict=True))
    torch.testing.assert_close(acc.result()[0], expected, rtol=1e-13, atol=1e-15)
    got = acc.log_mean_exp()
    assert got.item() == pytest.approx(objective, rel=1e-13, abs=1e-15)
    batch = tilted_objective(torch.tensor(losses, dtype=torch.float64), t,
                             prior=torch.tensor(prior, dtype=torch.float64))  # fmt: skip
    assert batch.item() == pytest.approx(objective, rel=1e-13, abs=1e-15)


def test_priors_of_one_change_nothing_bit_for_bit():
    gen = torch.Generator().manual_seed(4)
    losses = torch.rand(4, generator=gen)
    grads = [torch.randn(5, generator=gen) for _ in range(4)]
    for t in (0.0, 0.7, math.inf):
        plain, ones = TiltedAccumulator(t), TiltedAccumulator(t)
        for loss, g in zip(losses, grads, strict=True):
            plain.add(loss, [g.clone()])
            ones.add(loss, [g.clone()], prior=1.0)
        assert torch.equal(plain.result()[0], ones.result()[0])
        assert torch.equal(plain.log_mean_exp(), ones.log_mean_exp())
        assert torch.equal(
            tilted_objective(losses, t), tilted_objective(losses, t, prior=torch.ones(4))
        )


@pytest.mark.parametrize("prior", [0.0, -1.0, math.inf, math.nan])
def test_a_prior_outside_the_range_is_refused(prior):
    acc = TiltedAccumulator(1.0)
    with pytest.raises(ValueError, match="prior must be a finite number > 0"):
        acc.add(torch.tensor(0.3), [torch.zeros(2)], prior=prior)


@pytest.mark.parametrize("t", [1e-3, 3e-3, 1e-2, 0.1, 1.0, 20.0])
def test_tsam_step_returns_the_tilted_objective_of_its_losses_at_small_t(t):
    """step() returns (1/t) log mean exp(t L_j) of the s losses it evaluated, in float32 to a
    few ulps of the loss: the float64 logsumexp of those losses is the reference.  A float32
    running normaliser is off by about 6e-8 / t (1e-5 at t = 1e-3, 30 times the tilt's effect)."""
    from tiltedsam import TSAM

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)

    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, tilt=t, num_samples=8,
               noise_radius=3.0, seed=0)  # fmt: skip
    value = opt.step(closure).double()
    losses = opt.last_step.losses.double()
    exact = (torch.logsumexp(t * losses, 0) - math.log(len(losses))) / t
    assert abs(value - exact) <= 4 * torch.finfo(torch.float32).eps * exact
    assert value >= losses.float().double().mean() - 4 * torch.finfo(torch.float32).eps
