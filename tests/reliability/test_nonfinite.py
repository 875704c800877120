"""Non-finite values injected by the closure into one perturbed pass follow the documented policy
(raise, skip the step, or skip the sample) and are counted; parameters never hold NaN/inf; an
exception inside the closure leaves θ restored; a diverging run stops before checkpointing NaN."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from tiltedsam import SAM, TSAM
from tiltedsam.experiments import TrainConfig, parse_method, train_run
from tiltedsam.experiments.checkpoint import read_checkpoint
from tiltedsam.optim import METHODS, create_optimizer
from tiltedsam.optim.tsam_resample import TSAMResample

from ..conftest import Shardable, closure_for, make_mlp, make_regression
from .conftest import tiny_data


class _InfGrad(torch.autograd.Function):
    """Identity forward; the backward pass returns inf: a finite loss with an inf gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


def faulty_closure(model, x, y, bad_passes, fault="nan_loss", record=None):
    """A closure whose passes listed in ``bad_passes`` (0-based, over the whole run) go bad."""
    calls = [0]

    def build(x, y):
        return functools.partial(_faulty_pass, model, x, y, bad_passes, fault, record, calls)

    return Shardable(build, x, y)


def _faulty_pass(model, x, y, bad_passes, fault, record, calls):
    out = model(x)
    index = calls[0]
    calls[0] += 1
    if index in bad_passes and fault == "inf_grad":
        out = _InfGrad.apply(out)
    loss = torch.nn.functional.cross_entropy(out, y)
    if index in bad_passes and fault in ("nan_loss", "inf_loss"):
        loss = loss * (math.nan if fault == "nan_loss" else math.inf)
    loss.backward()
    if record is not None:
        record.append((loss.detach().clone(), [p.grad.clone() for p in model.parameters()]))
    return loss


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _all_finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("fault", ["nan_loss", "inf_loss", "inf_grad"])
@pytest.mark.parametrize("t", [0.0, 1.0, math.inf])
def test_skip_sample_drops_the_bad_sample_and_steps_with_the_others(float64, fault, t):
    """uniform sampler (one pass per sample), plain SGD lr 1: the update is exactly minus the
    tilted average of the clean samples' gradients, recomputed from a clean run's passes."""
    x, y = make_regression()
    s, bad = 4, 2
    clean_model = make_mlp()
    record = []
    clean = TSAM(clean_model.parameters(), torch.optim.SGD, tilt=t, num_samples=s, rho=0.5,
                 sampler="uniform", seed=3, lr=1.0)  # fmt: skip
    theta = _params(clean_model)
    clean.step(faulty_closure(clean_model, x, y, set(), record=record))
    losses = torch.stack([loss for loss, _ in record])
    keep = [j for j in range(s) if j != bad]
    kept = losses[keep]
    w = (
        torch.softmax(t * (kept - kept.max()), 0)
        if math.isfinite(t)
        else (kept == kept.max()) / 1.0
    )
    w = w / w.sum()
    expected = [
        th - sum(wj * record[j][1][i] for wj, j in zip(w, keep, strict=True))
        for i, th in enumerate(theta)
    ]

    model = make_mlp()
    opt = TSAM(model.parameters(), torch.optim.SGD, tilt=t, num_samples=s, rho=0.5,
               sampler="uniform", seed=3, lr=1.0, nonfinite="skip_sample")  # fmt: skip
    opt.step(faulty_closure(model, x, y, {bad}, fault))
    assert opt.skipped_samples == 1 and opt.skipped_steps == 0
    assert opt.last_step.took_step and opt.last_step.weights[bad] == 0
    assert torch.isclose(opt.last_step.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.isfinite(opt.last_step.objective)
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fault", ["nan_loss", "inf_grad"])
def test_skip_sample_with_the_ascent_sampler_drops_a_sample_poisoned_in_its_ascent_pass(fault):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = TSAM(model.parameters(), torch.optim.SGD, num_samples=3, lr=0.1, momentum=0.9,
               nonfinite="skip_sample")  # fmt: skip
    before = _params(model)
    opt.step(faulty_closure(model, x, y, {2}, fault))  # pass 2 = the ascent pass of sample 1
    assert opt.skipped_samples == 1 and opt.last_step.took_step
    assert opt.last_step.weights[1] == 0 and _all_finite(model)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_skip_sample_skips_the_step_when_every_sample_is_bad_and_state_dict_keeps_the_count():
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = TSAM(model.parameters(), torch.optim.SGD, num_samples=3, lr=0.1, momentum=0.9,
               nonfinite="skip_sample")  # fmt: skip
    before = _params(model)
    opt.step(faulty_closure(model, x, y, set(range(6))))
    assert opt.skipped_samples == 3 and opt.skipped_steps == 1 and not opt.last_step.took_step
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert opt.state_dict()["perturbation"]["skipped_samples"] == 3
    fresh = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, nonfinite="skip_sample")
    fresh.load_state_dict(opt.state_dict())
    assert fresh.skipped_samples == 3 and fresh.skipped_steps == 1


@pytest.mark.parametrize("name", list(METHODS)[1:])  # every perturbation optimizer
@pytest.mark.parametrize("fault", ["nan_loss", "inf_grad"])
def test_every_optimizer_skips_or_raises_and_never_writes_nonfinite_parameters(name, fault):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    before = _params(model)
    # tsam-resample discards the gradients of its scoring passes (only the drawn point's is
    # used), so a fault in one of them rightly changes nothing: fault every pass there.
    passes = set(range(64)) if METHODS[name].cls is TSAMResample else {1}
    raiser = create_optimizer(name, model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(FloatingPointError, match="non-finite"):
        raiser.step(faulty_closure(model, x, y, passes, fault))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    skipper = create_optimizer(name, model.parameters(), lr=0.1, nonfinite="skip")
    skipper.step(faulty_closure(model, x, y, passes, fault))
    assert skipper.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    skipper.step(closure_for(model, x, y))  # the next clean step goes through
    assert _all_finite(model) and skipper.skipped_steps == 1


@pytest.mark.parametrize("opt_cls", [SAM, TSAM])
@pytest.mark.parametrize("error", [RuntimeError("shape mismatch (injected)"), KeyboardInterrupt])
def test_an_exception_in_the_closure_leaves_theta_restored(opt_cls, error):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = opt_cls(model.parameters(), torch.optim.SGD, lr=0.1)
    before = _params(model)
    calls = [0]

    def closure():
        calls[0] += 1
        if calls[0] == 2:  # the parameters are perturbed now
            raise error
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(type(error) if isinstance(error, Exception) else error):
        opt.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    opt.step(closure_for(model, x, y))  # and the optimizer is usable afterwards
    assert _all_finite(model)


def _poisoned_data():
    data = tiny_data(n=96)
    x = data.x_train.clone()
    x[5] = math.nan  # one bad example: every pass of its batch is NaN
    return type(data)(x, data.y_train, data.x_test, data.y_test, 3, "poisoned")


def test_a_run_with_a_nan_batch_completes_under_skip_sample_and_counts_it(tmp_path):
    config = TrainConfig(model="mlp", epochs=2, batch_size=16, lr=0.05)
    spec = parse_method("tsam:num_samples=2,nonfinite=skip_sample")
    result = train_run(spec, _poisoned_data(), config, 0, progress=False,
                       checkpoint=tmp_path / "c.pt")  # fmt: skip
    assert result.skipped_steps == 2 and result.skipped_samples == 4  # one batch per epoch
    assert all(math.isfinite(h["step_loss"]) for h in result.history)
    assert all(
        bool(torch.isfinite(t).all()) for t in read_checkpoint(tmp_path / "c.pt")["model"].values()
    )


def test_a_diverging_run_stops_before_checkpointing_nan_parameters(tmp_path):
    config = TrainConfig(model="mlp", epochs=2, batch_size=16, lr=0.05)
    # Without the per-step check (nonfinite=unchecked) the epoch-end guard catches it.
    with pytest.raises(
        FloatingPointError, match=r"unchecked seed 0 diverged in epoch 1.*nonfinite=skip"
    ):
        train_run(parse_method("erm:nonfinite=unchecked"), _poisoned_data(), config, 0,
                  progress=False, checkpoint=tmp_path / "c.pt")  # fmt: skip
    assert not (tmp_path / "c.pt").exists()  # nothing NaN was written
    # ERM has the per-step check of every method (issue #19): it stops at the step.
    with pytest.raises(FloatingPointError, match=r"non-finite loss .*left unchanged"):
        train_run(parse_method("erm"), _poisoned_data(), config, 0, progress=False,
                  checkpoint=tmp_path / "c.pt")  # fmt: skip
    assert not (tmp_path / "c.pt").exists()


def test_the_error_names_the_parameter_whose_gradient_is_not_finite():
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)  # Linear(5, 8), Tanh, Linear(8, 3): 4 parameters
    last_bias = model[2].bias

    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        last_bias.grad[1] = math.nan  # the loss stays finite
        return loss.detach()

    erm = create_optimizer("erm", model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match=r"first non-finite at parameter 3 .*shape \(3,\)"):
        erm.step(closure)
