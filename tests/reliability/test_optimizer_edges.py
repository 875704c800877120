"""Issue #17, class 6 (the optimizers' part) and the two-phase step: per-group options checked
like the constructor's, sparse and complex tensors refused with a clear error, HMC at a sampling
tilt it cannot represent refused, and ``compute_gradient`` after a skipped step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tiltedsam import TSAM
from tiltedsam.optim import METHODS, create_optimizer
from tiltedsam.optim.base import PerturbationOptimizer

from ..conftest import Shardable, closure_for, make_mlp, make_regression
from ..test_contract import ACTIVE
from ..test_ecosystem import _scaled_closure, flat

NAMES = sorted(set(METHODS) - {"erm"})
# adaptive (SAM/ASAM) is a switch, taken as bool(value) by the constructor as by the groups.
SWITCHES = {"adaptive"}


def make(name, model=None, *, params=None, **kw):
    """``name`` with its active options over ``params`` (default: ``model``'s parameters)."""
    seed = {"seed": 3} if METHODS[name].seeded else {}
    params = model.parameters() if params is None else params
    return create_optimizer(name, params, base="sgd", lr=0.1, momentum=0.9,
                            **seed, **{**ACTIVE[name][0], **kw})  # fmt: skip


def _groups(model, **bad):
    first, second = model[0], model[2]
    return [{"params": first.parameters()}, {"params": second.parameters(), **bad}]


def _group_options(name: str) -> list[str]:
    model = make_mlp()
    opt = make(name, model)
    own = set(opt.defaults) - set(opt.base_optimizer.defaults) - SWITCHES
    return sorted(own)


def test_every_per_group_option_has_the_constructors_check():
    """A per-group option without a check would accept rho=-1 (the ascent goes downhill)."""
    for name in NAMES:
        opt = make(name, make_mlp())
        assert isinstance(opt, PerturbationOptimizer)
        own = set(opt.defaults) - set(opt.base_optimizer.defaults) - SWITCHES
        assert own <= set(type(opt).group_checks), (name, own - set(type(opt).group_checks))


CASES = [(n, k) for n in NAMES for k in _group_options(n)]


@pytest.mark.parametrize(("name", "option"), CASES)
@pytest.mark.parametrize("value", [-1.0, math.nan])
def test_a_bad_option_in_a_param_group_is_an_error_naming_the_group(name, option, value):
    model = make_mlp()
    message = rf"param_groups\[1\] option {option} must"
    with pytest.raises(ValueError, match=message):
        make(name, model, params=_groups(model, **{option: value}))
    opt = make(name, make_mlp())
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], option: value})
    assert len(opt.param_groups) == 1, "a refused group is not added"
    state = opt.state_dict()
    state["param_groups"][0][option] = value
    with pytest.raises(ValueError, match=rf"param_groups\[0\] option {option} must"):
        make(name, make_mlp()).load_state_dict(state)


def test_rho_minus_one_in_a_group_no_longer_ascends_downhill():
    """The issue's example: SAM with {"rho": -1} in a group was accepted."""
    model = make_mlp()
    with pytest.raises(ValueError, match=r"param_groups\[1\] option rho must be in \[0, inf\)"):
        make("sam", model, params=_groups(model, rho=-1))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["sparse", "complex"])
def test_sparse_and_complex_parameters_are_refused_at_construction(name, kind):
    dense = torch.nn.Parameter(torch.ones(3, 3))
    odd = (torch.nn.Parameter(torch.randn(3, 3).to_sparse()) if kind == "sparse"
           else torch.nn.Parameter(torch.randn(3, dtype=torch.complex64)))  # fmt: skip
    words = "sparse_coo tensor: .* dense" if kind == "sparse" else "complex .* real parameters"
    with pytest.raises(TypeError, match=rf"param_groups\[0\]\['params'\]\[1\] .*{words}"):
        make(name, params=[dense, odd])


@pytest.mark.parametrize("name", ["sam", "tsam", "frobsam"])
def test_a_sparse_gradient_is_a_clear_error_and_theta_is_restored(name):
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    before = embedding.weight.detach().clone()
    opt = make(name, params=embedding.parameters())

    def closure():
        loss = (embedding(torch.tensor([1, 2])) ** 2).sum()
        loss.backward()
        return loss

    with pytest.raises(TypeError, match=r"sparse_coo gradient: .*sparse=False"):
        opt.step(closure)
    assert torch.equal(embedding.weight.detach(), before)


@pytest.mark.parametrize("tilt", [math.inf, 1e300, 1e39])
def test_hmc_at_a_sampling_tilt_beyond_the_dtype_is_refused(tilt):
    """HMC multiplies the gradient by δ·t: at t = inf with δ > 0 every step was NaN."""
    model = make_mlp(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"sampler='hmc' needs the sampling tilt .*float32"):
        TSAM(model.parameters(), torch.optim.SGD, lr=0.1, sampler="hmc", tilt=tilt, delta=0.5)


@pytest.mark.parametrize(("tilt", "delta"), [(math.inf, 0.0), (1e8, 0.5), (3e38, 1.0)])
def test_hmc_inside_the_range_takes_finite_steps(tilt, delta):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, sampler="hmc", tilt=tilt,
               delta=delta, seed=0)  # fmt: skip
    for _ in range(3):
        assert torch.isfinite(opt.step(closure_for(model, x, y)))
    assert opt.skipped_steps == 0 and torch.isfinite(flat(model)).all()


def _nan_closure(model, x, y):
    def build(xs, ys):
        def closure():
            loss = F.cross_entropy(model(xs), ys) * math.nan
            loss.backward()
            return loss

        return closure

    return Shardable(build, x, y)


@pytest.mark.parametrize("name", NAMES)
def test_compute_gradient_after_a_skipped_step_then_step_takes_no_step(name, float64):
    """The Hugging Face Trainer flow: compute_gradient, then step() without a closure.  After a
    skipped step that step() raised "step() requires a closure"."""
    x, y = make_regression()
    model, twin = make_mlp(), make_mlp()
    opt, reference = make(name, model, nonfinite="skip"), make(name, twin, nonfinite="skip")
    before = flat(model).clone()
    opt.compute_gradient(_nan_closure(model, x, y))
    opt.step()  # nothing to apply: no error, no step
    assert torch.equal(flat(model), before) and opt.skipped_steps == 1
    reference.step(_nan_closure(twin, x, y))
    for _ in range(2):  # then the two-phase steps equal plain ones
        opt.compute_gradient(closure_for(model, x, y))
        opt.step()
        reference.step(closure_for(twin, x, y))
    assert torch.equal(flat(model), flat(twin)) and not torch.equal(flat(model), before)
    with pytest.raises(TypeError, match="requires a closure"):
        opt.step()


@pytest.mark.parametrize("name", ["sam", "tsam", "esam2"])
def test_compute_gradient_after_a_grad_scaler_inf_then_step_takes_no_step(name):
    x, y = make_regression(n=16, dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, backoff_factor=0.5)
    opt = make(name, model, grad_scaler=scaler)
    before = flat(model).clone()
    opt.compute_gradient(_scaled_closure(model, x, y, scaler, inject_inf=1))
    opt.step()
    assert torch.equal(flat(model), before) and opt.skipped_steps == 1
    assert scaler.get_scale() == 2.0**9
    opt.compute_gradient(_scaled_closure(model, x, y, scaler))
    opt.step()
    assert not torch.equal(flat(model), before)


def test_a_step_with_a_closure_after_compute_gradient_applies_it_once(float64):
    """``step(closure)`` after ``compute_gradient`` applies the prepared gradient and calls the
    closure once, without gradients, for its value (Lightning's hook path, issue #19): the run
    equals one plain step, and no second step is pending afterwards."""
    x, y = make_regression()
    model, twin = make_mlp(), make_mlp()
    opt, reference = make("sam", model), make("sam", twin)
    opt.compute_gradient(closure_for(model, x, y))
    loss = opt.step(lambda: F.cross_entropy(model(x), y))  # no backward: called under no_grad
    reference.step(closure_for(twin, x, y))
    assert torch.equal(flat(model), flat(twin)) and not loss.requires_grad
    with pytest.raises(TypeError, match="requires a closure"):
        opt.step()
