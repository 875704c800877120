"""Bad input gets a clear error naming the parameter and its allowed range."""

import math
import warnings

import pytest
import torch

from tiltedsam import SAM, TSAM, HMCSampler, TiltSchedule

from .conftest import closure_for, make_mlp, make_regression


def params():
    return make_mlp(dtype=torch.float32).parameters()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"tilt": -1.0}, r"tilt t must be in \[0, inf\]"),
        ({"tilt": float("nan")}, "tilt t must not be NaN"),
        ({"tilt": "5"}, "tilt t must be a real number"),
        ({"num_samples": 0}, r"num_samples must be an int >= 1"),
        ({"num_samples": 2.5}, r"num_samples must be an int >= 1"),
        ({"rho": -0.1}, r"rho must be in \[0, inf\)"),
        ({"rho": math.inf}, r"rho must be in \[0, inf\)"),
        ({"noise_radius": -1}, r"noise_radius must be in \[0, inf\)"),
        ({"sampler": "langevin"}, "sampler must be one of 'ascent', 'uniform', 'hmc'"),
        ({"noise": "laplace"}, "noise must be one of 'gaussian', 'ball'"),
        ({"delta": 1.5}, r"delta must be in \[0, 1\]"),
        ({"tilt_schedule": "cosine"}, "tilt_schedule must be one of"),
        ({"tilt_schedule": "warmup"}, "needs total_steps"),
        ({"tilt_schedule": "decay", "total_steps": 0}, "total_steps must be an int >= 1"),
        ({"tilt": math.inf, "tilt_schedule": "warmup", "total_steps": 3}, "finite tilt"),
        ({"nonfinite": "ignore"}, "nonfinite must be one of"),
        ({"bn_update": "never"}, "bn_update must be one of"),
        ({"model": "net"}, "model must be a torch.nn.Module"),
        ({"sampler": "hmc", "noise": "ball"}, "noise= does not apply"),
    ],
)
def test_tsam_constructor_rejects(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TSAM(params(), torch.optim.SGD, lr=0.1, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"step_size": 0.0}, r"step_size must be in \(0, inf\)"),
        ({"sigma": -1.0}, r"sigma must be in \(0, inf\)"),
    ],
)
def test_hmc_sampler_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HMCSampler(**kwargs)


def test_base_optimizer_must_be_a_class():
    model = make_mlp(dtype=torch.float32)
    instance = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="base_optimizer_cls must be an optimizer class"):
        TSAM(model.parameters(), instance, lr=0.1)
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer subclass"):
        SAM(model.parameters(), "sgd", lr=0.1)
    with pytest.raises(ValueError, match="rho must be"):
        SAM(model.parameters(), torch.optim.SGD, rho=-1.0, lr=0.1)


def test_schedule_validates():
    with pytest.raises(ValueError, match="tilt t"):
        TiltSchedule(-2.0)


@pytest.mark.parametrize("opt_cls", [SAM, TSAM])
def test_step_needs_a_closure_that_returns_a_loss_with_gradients(opt_cls):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = opt_cls(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="requires a closure"):
        opt.step()

    def returns_none():
        torch.nn.functional.cross_entropy(model(x), y).backward()

    with pytest.raises(TypeError, match="closure returned None"):
        opt.step(returns_none)

    def no_backward():
        return torch.nn.functional.cross_entropy(model(x), y)

    with pytest.raises(RuntimeError, match=r"call loss.backward\(\)"):
        opt.step(no_backward)

    def not_scalar():
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        loss.mean().backward()
        return loss

    with pytest.raises(ValueError, match="scalar loss"):
        opt.step(not_scalar)


@pytest.mark.parametrize("opt_cls", [SAM, TSAM])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_loss_raises_or_skips_and_never_writes_parameters(opt_cls, bad):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    calls = []

    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        calls.append(1)
        if len(calls) == 2:  # poison the second pass only
            loss = loss * bad
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    opt = opt_cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    calls.clear()
    skipper = opt_cls(model.parameters(), torch.optim.SGD, lr=0.1, nonfinite="skip")
    skipper.step(closure)
    assert skipper.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    skipper.step(closure_for(model, x, y))  # the next clean step goes through
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_load_state_dict_rejects_a_foreign_dict():
    model = make_mlp(dtype=torch.float32)
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match=r"keys 'state' and 'param_groups'.*got \['0.bias'"):
        opt.load_state_dict(model.state_dict())  # the model's, not the optimizer's
    with pytest.raises(ValueError, match="got list"):
        opt.load_state_dict([])
    plain = torch.optim.SGD(model.parameters(), lr=0.1).state_dict()
    opt.load_state_dict(plain)  # a plain base-optimizer dict is taken (issue #18)


def test_hmc_without_a_sampling_tilt_warns_that_it_ignores_the_loss():
    """HMC's dynamics are driven by delta*t*L: at the default delta = 0 they are not."""
    with pytest.warns(UserWarning, match="sampler='hmc' with delta=0"):
        TSAM(params(), torch.optim.SGD, lr=0.1, sampler="hmc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TSAM(params(), torch.optim.SGD, lr=0.1, sampler="hmc", delta=0.5)
    with pytest.raises(TypeError, match="mh must be True or False"):
        HMCSampler(mh="False")


def test_a_misspelt_keyword_is_named_with_the_closest_spelling():
    """Not SGD's "unexpected keyword argument": the wrapper's and the base's options are known."""
    with pytest.raises(
        TypeError, match=r"TSAM: unknown keyword\(s\) \['num_sample'\].*'num_samples'"
    ):
        TSAM(params(), torch.optim.SGD, lr=0.1, num_sample=3)
    with pytest.raises(TypeError, match=r"SAM: unknown keyword\(s\) \['momentm'\].*'momentum'"):
        SAM(params(), torch.optim.SGD, lr=0.1, momentm=0.9)


@pytest.mark.parametrize("name,key,bad", [("tsam", "rho", -1.0), ("sam", "rho", -0.1),
                                          ("tsam", "noise_radius", -2.0), ("pgn", "alpha", 1.5)])  # fmt: skip
def test_a_group_option_set_out_of_range_after_construction_is_refused_at_the_step(name, key, bad):
    from tiltedsam.optim import create_optimizer

    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), lr=0.1)
    opt.step(closure_for(model, x, y))
    opt.param_groups[0][key] = bad  # e.g. from a scheduler
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=rf"param_groups\[0\] option {key}"):
        opt.step(closure_for(model, x, y))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_tensor_radius_set_by_a_scheduler_is_accepted():
    from tiltedsam.optim import create_optimizer

    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer("tsam", model.parameters(), lr=0.1)
    opt.step(closure_for(model, x, y))
    opt.param_groups[0]["rho"] = torch.tensor(0.02, dtype=torch.float64)
    opt.step(closure_for(model, x, y))
    assert SAM(make_mlp().parameters(), torch.optim.SGD, rho=torch.tensor(0.1), lr=0.1)
