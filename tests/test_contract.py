"""One contract that every optimizer in the registry passes, ``erm`` included (issue #19: it
clears the gradients itself like every other method); the references are torch.optim's own."""

import copy
import pickle

import pytest
import torch

from tiltedsam.optim import METHODS, PerturbationOptimizer, create_optimizer
from tiltedsam.optim.registry import base_class

from .conftest import Shardable, closure_for, make_mlp, make_regression

# Options that make each method's perturbation vanish (its radius or strength set to 0).
NEUTRAL = {
    "erm": {},
    "sam": {"rho": 0.0},
    "asam": {"rho": 0.0},
    "esam1": {"rho": 0.0},
    "esam2": {"rhos": (0.0, 0.0)},
    "pgn": {"rho": 0.0, "alpha": 0.7},
    "rsam": {"rho": 0.0, "sigma": 0.0},
    "tracesam": {"rho": 0.0, "num_samples": 2},
    "frobsam": {"lam": 0.0, "num_samples": 3},
    "detsam": {"lam": 0.0, "num_samples": 2},
    "tsam": {"tilt": 0.0, "num_samples": 1, "rho": 0.0, "noise_radius": 0.0},
    "tsam-naive": {"num_samples": 1, "rho": 0.0},
    "tsam-resample": {"tilt": 0.0, "num_samples": 1, "rho": 0.0, "noise_radius": 0.0},
    "tsam-stale": {"tilt": 0.0, "num_samples": 1, "rho": 0.0, "noise_radius": 0.0},
    "tsam-split": {"tilt": 0.0, "num_samples": 1, "rho": 0.0, "noise_radius": 0.0},
    "tsam-split-rise": {"tilt": 0.0, "num_samples": 1, "rho": 0.0, "noise_radius": 0.0},
    "tsam-intermittent": {
        "tilt": 0.0,
        "num_samples": 1,
        "rho": 0.0,
        "noise_radius": 0.0,
        "alpha": 0.0,
    },
}
# Typical settings with a real perturbation, and the documented passes per step.
ACTIVE = {
    "erm": ({}, 1),
    "sam": ({"rho": 0.1}, 2),
    "asam": ({"rho": 0.5}, 2),
    "esam1": ({"rho": 0.1}, 2),
    "esam2": ({"rhos": (0.05, 0.1, 0.2)}, 4),
    "pgn": ({"rho": 0.1, "alpha": 0.5}, 2),
    "rsam": ({"rho": 0.1, "sigma": 0.01}, 2),
    "tracesam": ({"rho": 0.05, "num_samples": 2}, 3),
    "frobsam": ({"rho": 0.05, "lam": 0.01, "num_samples": 3}, 4),
    "detsam": ({"rho": 0.5, "num_samples": 2}, 3),
    "tsam": ({"tilt": 5.0, "num_samples": 3}, 6),
    "tsam-naive": ({"tilt": 5.0, "num_samples": 4, "rho": 0.5}, 4),
    "tsam-resample": ({"tilt": 5.0, "num_samples": 3}, 5),
    "tsam-stale": ({"tilt": 5.0, "num_samples": 3}, 4),
    "tsam-split": ({"tilt": 5.0, "num_samples": 3}, 6),
    "tsam-split-rise": ({"tilt": 5.0, "num_samples": 3}, 6),
    "tsam-intermittent": ({"tilt": 5.0, "num_samples": 2, "every": 1}, 4),  # k = 1: TSAM
}
NAMES = sorted(METHODS)


def test_the_contract_covers_every_registered_method():
    assert set(NEUTRAL) == set(ACTIVE) == set(NAMES)


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def base_step(opt, model, x, y):
    """One step of a plain torch optimizer (the caller zeroes the gradients)."""
    opt.zero_grad()
    closure_for(model, x, y)()
    opt.step()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("base,kw", [("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}),
                                     ("adamw", {"lr": 1e-2})])  # fmt: skip
def test_zero_radius_reproduces_the_base_optimizer_bit_for_bit(name, base, kw):
    x, y = make_regression()
    model, ref = make_mlp(), make_mlp()
    opt = create_optimizer(name, model.parameters(), base=base, **NEUTRAL[name], **kw)
    ref_opt = base_class(base)(ref.parameters(), **kw)
    for _ in range(10):
        opt.step(closure_for(model, x, y))
        base_step(ref_opt, ref, x, y)
    assert torch.equal(flat(model), flat(ref))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name):
    x, y = make_regression()
    kw = {**ACTIVE[name][0], "lr": 0.05, "momentum": 0.9}

    def build(model):
        return create_optimizer(name, model.parameters(), **kw)

    full = make_mlp()
    full_opt = build(full)
    for _ in range(6):
        full_opt.step(closure_for(full, x, y))
    model = make_mlp()
    opt = build(model)
    for _ in range(3):
        opt.step(closure_for(model, x, y))
    saved = {"model": model.state_dict(), "opt": opt.state_dict()}
    assert saved["opt"]["state"], "momentum buffers are checkpointed"
    assert set(saved["opt"]) == {"state", "param_groups", "perturbation"}  # torch's layout
    model2 = make_mlp(seed=5)
    opt2 = build(model2)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    for _ in range(3):
        opt2.step(closure_for(model2, x, y))
    assert torch.equal(flat(model2), flat(full))


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_with_different_lr(name):
    x, y = make_regression()
    model = make_mlp()
    groups = [{"params": model[0].parameters(), "lr": 0.0},
              {"params": model[2].parameters(), "lr": 0.1}]  # fmt: skip
    opt = create_optimizer(name, groups, **ACTIVE[name][0], lr=0.5)
    first = [p.detach().clone() for p in model[0].parameters()]
    last = [p.detach().clone() for p in model[2].parameters()]
    opt.step(closure_for(model, x, y))
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.1]
    assert all(torch.equal(a, b) for a, b in zip(first, model[0].parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(last, model[2].parameters(), strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_frozen_and_none_grad_parameters_are_left_alone(name):
    x, y = make_regression()
    model = make_mlp()
    model[0].bias.requires_grad_(False)
    frozen = model[0].bias.detach().clone()
    unused = torch.nn.Parameter(torch.linspace(-1, 1, 4, dtype=torch.float64))
    opt = create_optimizer(name, [*model.parameters(), unused], **ACTIVE[name][0], lr=0.1,
                           momentum=0.9, weight_decay=0.1)  # fmt: skip
    for _ in range(3):
        opt.step(closure_for(model, x, y))
    assert torch.equal(model[0].bias, frozen)
    assert torch.equal(unused.detach(), torch.linspace(-1, 1, 4, dtype=torch.float64))
    assert unused.grad is None


@pytest.mark.parametrize("name", NAMES)
def test_a_parameter_frozen_after_training_started_stops_moving(name):
    # Freeze the first layer after some steps (fine-tuning a head); no zero_grad() is needed
    # with these optimizers, so its stale gradient must not be applied again.
    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), **ACTIVE[name][0], lr=0.1, momentum=0.9)
    opt.step(closure_for(model, x, y))
    model[0].requires_grad_(False)
    frozen = flat(model[0]).clone()
    for _ in range(3):
        opt.step(closure_for(model, x, y))
    assert torch.equal(flat(model[0]), frozen)
    assert model[0].weight.grad is None


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
# torch warns the same for a copied (SGD, StepLR): the copy's step() is not the wrapped one
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_a_copy_of_model_and_optimizer_continues_like_the_original(name, how):
    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), **ACTIVE[name][0], lr=0.05, momentum=0.9)
    for _ in range(2):
        opt.step(closure_for(model, x, y))
    # An LR scheduler wraps the instance's step() with a reference to this optimizer: the
    # copy must get its own, or its step() would drive the original.
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    if how == "deepcopy":
        model2, opt2, sched2 = copy.deepcopy((model, opt, sched))
    else:
        model2, opt2, sched2 = pickle.loads(pickle.dumps((model, opt, sched)))
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.param_groups[0]["params"][0] is next(model2.parameters())
    for _ in range(2):
        opt.step(closure_for(model, x, y))
        sched.step()
        opt2.step(closure_for(model2, x, y))
        sched2.step()
    assert torch.equal(flat(model2), flat(model))
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.05 * 0.5**2


@pytest.mark.parametrize("name", NAMES)
def test_closure_is_required_and_called_the_documented_number_of_times(name):
    x, y = make_regression()
    model = make_mlp()
    kw, passes = ACTIVE[name]
    opt = create_optimizer(name, model.parameters(), **kw, lr=0.1)
    assert isinstance(opt, PerturbationOptimizer)
    with pytest.raises(TypeError, match="requires a closure"):
        opt.step()
    calls = []

    def counted(xs, ys):
        inner = closure_for(model, xs, ys)

        def counting():
            calls.append(1)
            return inner()

        return counting

    for _ in range(2):
        opt.step(Shardable(counted, x, y))
    assert len(calls) == 2 * passes == 2 * opt.passes_per_step


@pytest.mark.parametrize("name", NAMES)
def test_state_is_the_base_optimizers_state(name):
    """torch's contract: ``opt.state`` holds the momenta (schedulers' checks, Lightning and
    Accelerate checkpoint code and users read it), before and after ``load_state_dict``."""
    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), **ACTIVE[name][0], lr=0.05, momentum=0.9)
    opt.step(closure_for(model, x, y))
    assert opt.state is opt.base_optimizer.state
    assert set(opt.state) == set(model.parameters())
    assert all("momentum_buffer" in s for s in opt.state.values())
    opt.load_state_dict(opt.state_dict())
    assert opt.state is opt.base_optimizer.state and len(opt.state) == 4


@pytest.mark.parametrize("name", NAMES)
def test_a_plain_base_optimizer_checkpoint_loads(name):
    """Switching a run from AdamW to TSAM(AdamW) mid-training: the wrapper takes AdamW's own
    state dict and continues exactly as AdamW would (neutral settings: the same update)."""
    x, y = make_regression()
    model, ref = make_mlp(), make_mlp()
    plain = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        base_step(plain, model, x, y)
    ref.load_state_dict(model.state_dict())
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    ref_opt.load_state_dict(copy.deepcopy(plain.state_dict()))  # (loading shares the tensors)
    opt = create_optimizer(name, model.parameters(), base="adamw", lr=1e-2, **NEUTRAL[name])
    opt.load_state_dict(copy.deepcopy(plain.state_dict()))
    assert opt.state[next(model.parameters())]["step"] == 3
    for _ in range(3):
        opt.step(closure_for(model, x, y))
        base_step(ref_opt, ref, x, y)
    assert torch.equal(flat(model), flat(ref))
    assert opt.step_count == 3  # the perturbation state started fresh


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_in_the_earlier_layout_still_loads(name):
    """Checkpoints written before issue #18 hold ``{"base": ..., "perturbation": ...}``."""
    x, y = make_regression()
    kw = {**ACTIVE[name][0], "lr": 0.05, "momentum": 0.9}
    full = make_mlp()
    full_opt = create_optimizer(name, full.parameters(), **kw)
    for _ in range(4):
        full_opt.step(closure_for(full, x, y))
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), **kw)
    for _ in range(2):
        opt.step(closure_for(model, x, y))
    now = opt.state_dict()
    legacy = {"base": {"state": now["state"], "param_groups": now["param_groups"]},
              "perturbation": now["perturbation"]}  # fmt: skip
    model2 = make_mlp(seed=5)
    model2.load_state_dict(model.state_dict())
    opt2 = create_optimizer(name, model2.parameters(), **kw)
    opt2.load_state_dict(legacy)
    for _ in range(2):
        opt2.step(closure_for(model2, x, y))
    assert torch.equal(flat(model2), flat(full))
    with pytest.raises(ValueError, match="keys 'state' and 'param_groups'"):
        opt2.load_state_dict({"momenta": {}})
