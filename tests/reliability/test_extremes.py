"""Extreme settings: t = 1e6, losses of 1e4, ρ = 1e3, s = 1 and s = 64, float16 and bfloat16."""

from __future__ import annotations

import math

import pytest
import torch

from tiltedsam import SAM, TSAM

from ..conftest import closure_for, make_mlp, make_regression


def _shifted(model, x, y, shift):
    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y) + shift
        loss.backward()
        return loss

    return closure


def _run(t, shift=0.0, steps=3, **kw):
    x, y = make_regression()
    model = make_mlp()
    kw = {"num_samples": 4, "rho": 0.5, "sampler": "uniform", "seed": 0, **kw}
    opt = TSAM(model.parameters(), torch.optim.SGD, tilt=t, lr=0.1, momentum=0.9, **kw)
    for _ in range(steps):
        objective = opt.step(_shifted(model, x, y, shift))
    return model, opt, objective


def test_tilt_1e6_with_losses_of_1e4_is_finite_and_equals_the_max_limit(float64):
    huge, opt, objective = _run(1e6, shift=1e4)
    limit, _, _ = _run(math.inf, shift=1e4)
    assert opt.last_step.took_step and torch.isfinite(objective) and objective > 1e4
    weights = opt.last_step.weights
    assert torch.isfinite(weights).all() and weights.max() == 1.0  # one-hot, as at t = inf
    assert opt.last_step.effective_sample_size == 1.0
    for a, b in zip(huge.parameters(), limit.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("t", [1.0, 100.0])
def test_a_loss_offset_of_1e4_changes_nothing_but_the_objective(float64, t):
    shifted, opt_s, obj_s = _run(t, shift=1e4)
    plain, opt_p, obj_p = _run(t)
    torch.testing.assert_close(
        opt_s.last_step.weights, opt_p.last_step.weights, rtol=1e-6, atol=1e-9
    )
    for a, b in zip(shifted.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert obj_s - obj_p == pytest.approx(1e4, rel=1e-9)


@pytest.mark.parametrize("opt_cls", [TSAM, SAM])
def test_rho_1e3_steps_with_finite_parameters(opt_cls):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = opt_cls(model.parameters(), torch.optim.SGD, rho=1e3, lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        loss = opt.step(closure_for(model, x, y))
    assert torch.isfinite(loss) and opt.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # θ was restored exactly before each base step: the move is lr-sized, not ρ-sized.
    moved = max((p - b).abs().max() for p, b in zip(model.parameters(), before, strict=True))
    assert 0 < moved < 1.0


def test_one_sample_makes_the_tilt_irrelevant(float64):
    results = [_run(t, num_samples=1, sampler="ascent")[0] for t in (0.0, 5.0, math.inf)]
    for other in results[1:]:
        assert all(
            torch.equal(a, b)
            for a, b in zip(results[0].parameters(), other.parameters(), strict=True)
        )


def test_sixty_four_samples(float64):
    _, opt, _ = _run(0.0, num_samples=64, sampler="ascent", steps=2)
    assert opt.last_step.weights.shape == (64,) and opt.closure_calls == 2 * 2 * 64
    assert opt.last_step.effective_sample_size == pytest.approx(64.0)
    _, tilted, _ = _run(20.0, num_samples=64, steps=1)
    assert 1.0 <= tilted.last_step.effective_sample_size <= 64.0
    assert tilted.last_step.weights.sum() == pytest.approx(1.0)
    assert tilted.extra_buffers == _run(20.0, num_samples=1, steps=1)[1].extra_buffers


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parameters_train_and_stay_finite(dtype):
    x32, y = make_regression(dtype=torch.float32)
    half = make_mlp(dtype=dtype)
    full = make_mlp(dtype=torch.float32)  # the same initial values, in float32
    opts = [
        TSAM(m.parameters(), torch.optim.SGD, num_samples=2, seed=0, lr=0.1, momentum=0.9)
        for m in (half, full)
    ]
    start = [p.detach().clone() for p in half.parameters()]
    for _ in range(5):
        opts[0].step(closure_for(half, x32.to(dtype), y))
        opts[1].step(closure_for(full, x32, y))
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in half.parameters())
    assert opts[0].skipped_steps == 0
    assert any(not torch.equal(a, b) for a, b in zip(start, half.parameters(), strict=True))
    for h, f in zip(half.parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(h.float(), f, rtol=0.1, atol=0.05)  # the same trajectory


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_overflow_is_caught_by_skip_sample(dtype):
    x, y = make_regression(dtype=dtype)
    model = make_mlp(dtype=dtype)
    opt = TSAM(model.parameters(), torch.optim.SGD, num_samples=3, lr=0.1, nonfinite="skip_sample")
    calls = [0]

    def closure():  # the last pass of sample 0 overflows the dtype (1e39 > bfloat16's max)
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if calls[0] == 2:
            loss = loss * torch.tensor(1e30, dtype=dtype) * torch.tensor(1e30, dtype=dtype)
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.skipped_samples == 1 and opt.last_step.took_step
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("nonfinite", ["raise", "skip_sample"])
def test_tilt_above_float32_max_is_the_max_limit(nonfinite):
    """t = 1e39 overflows float32: t * 0 was NaN, so skip_sample stepped on the first sample's
    gradient with every weight 0 (nothing counted) and "raise" blamed finite losses."""
    huge, opt, objective = _run(1e39, nonfinite=nonfinite)
    limit, _, _ = _run(math.inf, nonfinite=nonfinite)
    assert opt.last_step.took_step and torch.isfinite(objective)
    assert opt.skipped_samples == 0 and opt.last_step.weights.max() == 1.0
    for a, b in zip(huge.parameters(), limit.parameters(), strict=True):
        assert torch.equal(a, b)


def test_tilt_1e_300_is_the_average_and_reports_the_tilted_mean(float64):
    """The t -> 0 end: equal weights (the update of t = 0) and an objective of mean + t var / 2,
    not the max (t = 1e-8) or NaN (t = 1e-300)."""
    tiny, opt, objective = _run(1e-300)
    zero, _, _ = _run(0.0)
    losses = opt.last_step.losses
    assert float(objective) == pytest.approx(float(losses.mean()), rel=1e-12)
    for a, b in zip(tiny.parameters(), zero.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
