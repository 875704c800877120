"""The step context: samplers and the batched path see a ``StepContext``, never the optimizer;
every pass of every method goes through its one guarded evaluation (restore on exception,
counting, the distributed reduction)."""

from __future__ import annotations

import pytest
import torch

from tiltedsam import TSAM, TSAMResample, make_closure
from tiltedsam.optim import METHODS, create_optimizer
from tiltedsam.optim import context as context_module
from tiltedsam.optim.context import StepContext
from tiltedsam.samplers import AscentSampler

from .conftest import Shardable, closure_for, make_mlp, make_regression
from .test_contract import ACTIVE

NAMES = sorted(METHODS)


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_a_sampler_is_handed_the_step_context_with_theta_and_radii():
    seen = []

    class Recording(AscentSampler):
        def perturb(self, ctx, closure, sample_tilt):
            seen.append((type(ctx), ctx.radii("rho"), [t.clone() for t in ctx.theta]))
            super().perturb(ctx, closure, sample_tilt)

    x, y = make_regression()
    model = make_mlp()
    groups = [{"params": model[0].parameters(), "rho": 0.1}, {"params": model[2].parameters()}]
    before = [p.detach().clone() for p in model.parameters()]
    opt = TSAM(groups, torch.optim.SGD, sampler=Recording(), num_samples=2, rho=0.05, lr=0.1)
    opt.step(closure_for(model, x, y))
    assert [kind for kind, _, _ in seen] == [StepContext, StepContext]
    assert seen[0][1] == [0.1, 0.05]  # per-group radii, in group order
    assert all(torch.equal(a, b) for a, b in zip(seen[0][2], before, strict=True))  # θ


@pytest.mark.parametrize("forward_only", [True, False])
@pytest.mark.parametrize("ascent", ["selected", "shared", "none"])
def test_a_closure_raising_in_a_scoring_pass_leaves_theta_intact(forward_only, ascent):
    """Issue #17: TSAMResample's scoring bypassed the guarded evaluation, so an exception in a
    scoring pass left the parameters at a perturbed point."""
    x, y = make_regression()
    model = make_mlp()
    opt = TSAMResample(model.parameters(), torch.optim.SGD, num_samples=3, ascent=ascent,
                       noise_radius=0.5, lr=0.1)  # fmt: skip
    before = flat(model).clone()
    calls = []

    def closure(backward=True):
        calls.append(backward)
        if len(calls) == 3:  # a scoring pass of every ascent variant
            raise RuntimeError("data loader died")
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if backward:
            loss.backward()
        return loss

    if not forward_only:

        def closure(inner=closure):  # no backward flag: scoring runs forward and backward
            return inner()

    with pytest.raises(RuntimeError, match="data loader died"):
        opt.step(closure)
    assert torch.equal(flat(model), before)
    assert opt.closure_calls == 2  # the two passes that returned were counted


@pytest.mark.parametrize("name", NAMES)
def test_every_pass_is_reduced_over_ranks_and_counted(name, monkeypatch):
    """With ``distributed="global"`` each pass (TSAMResample's forward-only scores included) is
    one all-reduce; the count of reductions is the count of closure calls."""
    reductions = []

    def one_rank_average(grads, extras, process_group=None):
        reductions.append(len(grads))
        return extras.clone()

    monkeypatch.setattr(context_module.dist_ops, "average_", one_rank_average)
    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), lr=0.1, **ACTIVE[name][0])
    opt.context.distributed = "global"  # as on every rank of a process group (of one)

    def build(x, y):
        def closure(backward=True):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if backward:
                loss.backward()
            return loss

        return closure

    for _ in range(2):
        opt.step(Shardable(build, x, y))
    assert len(reductions) == opt.closure_calls == 2 * opt.passes_per_step
    if name == "tsam-resample":  # the s scoring passes reduce the loss alone
        assert reductions.count(0) == 2 * opt.num_samples


def test_the_batched_path_counts_its_passes_through_the_context():
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = TSAM(model.parameters(), torch.optim.SGD, num_samples=3, batched=True, lr=0.1, seed=0)
    opt.step(make_closure(model, torch.nn.functional.cross_entropy, x, y))
    assert opt.closure_calls == opt.context.calls == opt.passes_per_step
