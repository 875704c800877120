"""The tilt math at the ends of its documented range and beyond (issue #17, class 6): t in
{0, 1e-300, 1e-8, 1, 1e8, 3.5e38, 1e39, 1e300, inf} with losses up to 1e4 in float16, bfloat16,
float32 and float64, against a 60+-digit mpmath reference of the same (dtype-rounded) losses."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from tiltedsam.tilt import TiltedAccumulator, tilted_objective, tilted_weights

TILTS = [0.0, 1e-300, 1e-8, 1.0, 1e8, 3.5e38, 1e39, 1e300, math.inf]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
RAW = [1e4, 9.5e3, 0.5, 3.0, 7.25]
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 2e-6, torch.float64: 1e-12}


def reference(values: list[float], t: float) -> tuple[list[float], float]:
    """Weights softmax(tL) and (1/t) log mean exp(tL) to many digits (limits at 0 and inf)."""
    n = len(values)
    if t == 0:
        return [1 / n] * n, sum(values) / n
    top = max(values)
    if math.isinf(t):
        ties = [v == top for v in values]
        return [tie / sum(ties) for tie in ties], top
    with mpmath.workdps(60 + max(0, int(-math.log10(t)))):
        t_mp = mpmath.mpf(t)
        logits = [t_mp * (mpmath.mpf(v) - top) for v in values]
        total = mpmath.fsum(mpmath.exp(x) for x in logits)
        weights = [float(mpmath.exp(x) / total) for x in logits]
        objective = top + mpmath.log(total / n) / t_mp
        return weights, float(objective)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t", TILTS, ids=lambda t: f"t={t:g}")
def test_weights_and_objective_match_the_reference(t, dtype):
    losses = torch.tensor(RAW, dtype=torch.float64).to(dtype)
    values = losses.double().tolist()  # what the dtype holds
    want_w, want_obj = reference(values, t)
    weights = tilted_weights(losses, t)
    objective = tilted_objective(losses, t)
    assert weights.dtype == dtype and objective.dtype == dtype
    assert torch.isfinite(weights).all() and torch.isfinite(objective)
    assert float(weights.double().sum()) == pytest.approx(1.0, abs=4 * TOLERANCE[dtype])
    assert weights.double().tolist() == pytest.approx(want_w, abs=4 * TOLERANCE[dtype])
    # the objective lies between the mean and the max, and equals the reference
    assert min(values) <= float(objective) <= max(values) * (1 + TOLERANCE[dtype])
    assert float(objective) == pytest.approx(want_obj, rel=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("t", TILTS, ids=lambda t: f"t={t:g}")
def test_the_streaming_accumulator_agrees(t, dtype):
    """The optimizer's accumulator: the tilted average of gradients and the objective."""
    losses = torch.tensor(RAW, dtype=dtype)
    grads = [torch.tensor([float(i), 1.0 - i], dtype=dtype) for i in range(len(RAW))]
    acc = TiltedAccumulator(t)
    for loss, g in zip(losses, grads, strict=True):
        acc.add(loss, [g])
    want_w, want_obj = reference(losses.double().tolist(), t)
    expected = sum(w * g.double() for w, g in zip(want_w, grads, strict=True))
    assert acc.result()[0].double().tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert float(acc.log_mean_exp()) == pytest.approx(want_obj, rel=TOLERANCE[dtype])


@pytest.mark.parametrize("t", TILTS, ids=lambda t: f"t={t:g}")
def test_masked_samples_are_left_out_at_every_tilt(t):
    """skip_sample's path: NaN/inf losses in dropped samples never reach the result."""
    losses = torch.tensor([*RAW, math.nan, math.inf], dtype=torch.float32)
    mask = torch.tensor([True] * len(RAW) + [False, False])
    _, want_obj = reference(torch.tensor(RAW, dtype=torch.float32).double().tolist(), t)
    assert float(tilted_objective(losses, t, mask=mask)) == pytest.approx(want_obj, rel=2e-6)
    acc = TiltedAccumulator(t)
    for loss, ok in zip(losses, mask, strict=True):
        acc.add(loss, [torch.ones(2)], valid=ok)
    assert float(acc.log_mean_exp()) == pytest.approx(want_obj, rel=2e-6)
    assert acc.result()[0].tolist() == [1.0, 1.0]
    none = torch.zeros_like(mask)
    assert math.isnan(float(tilted_objective(losses, t, mask=none)))


def test_tiny_tilts_give_the_mean_plus_half_t_var_not_the_max():
    """Before the fix t = 1e-8 returned the max loss and 1e-300 NaN."""
    losses = torch.tensor([1.0, 2.0, 4.0])
    mean, var = 7 / 3, ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3
    for t in (1e-8, 1e-300):
        assert float(tilted_objective(losses, t)) == pytest.approx(mean + t / 2 * var, rel=1e-7)
