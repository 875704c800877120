"""BatchNorm statistics of a step that does not happen: a closure that raises, a skipped
non-finite step, a dropped sample.  Each must leave the running statistics as they were before
the step (bit for bit), or a model is silently broken in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiltedsam import TSAM, create_optimizer
from tiltedsam.optim.registry import METHODS

from ..conftest import make_mlp, make_regression

ONE_RANK = [m for m in METHODS if m not in ("erm", "tsam-split", "tsam-split-rise")]


def _state(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]


def _same(model: nn.Module, before: list[torch.Tensor]) -> bool:
    after = [*model.parameters(), *model.buffers()]
    return all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("name", ONE_RANK)
@pytest.mark.parametrize("fail_at", [2, 3])
def test_a_closure_that_raises_leaves_parameters_and_statistics_as_before(name, fail_at):
    x, y = make_regression()
    model = make_mlp(batchnorm=True)
    opt = create_optimizer(name, model.parameters(), "sgd", lr=0.1, model=model)
    calls = [0]

    def closure(backward: bool = True):
        calls[0] += 1
        if calls[0] == fail_at:
            raise KeyError("boom")
        loss = nn.functional.cross_entropy(model(x), y)
        if backward:
            loss.backward()
        return loss

    before = _state(model)
    try:
        opt.step(closure)
    except KeyError:
        assert _same(model, before), f"{name}: a step that raised changed the model"
    else:  # fewer passes than fail_at: nothing to check but that the step ran
        assert calls[0] < fail_at


@pytest.mark.parametrize("name", ["sam", "tsam", "pgn", "esam2"])
def test_a_skipped_nonfinite_step_keeps_the_statistics_from_before_it(name):
    x, y = make_regression()
    model = make_mlp(batchnorm=True)
    opt = create_optimizer(name, model.parameters(), "sgd", lr=0.1, model=model, nonfinite="skip")
    bad = x.clone()
    bad[0, 0] = float("inf")

    def closure():
        loss = nn.functional.cross_entropy(model(bad), y)
        loss.backward()
        return loss

    before = _state(model)
    opt.step(closure)
    assert opt.skipped_steps == 1 and _same(model, before)


@pytest.mark.parametrize("bn_update", ["first", "every"])
def test_a_dropped_sample_leaves_no_nonfinite_statistics(bn_update):
    """skip_sample drops sample 1, whose pass overflowed; the step is taken on the others and the
    statistics it leaves are finite: those from before the step, as the kept ones are poisoned."""
    x, y = make_regression()
    model = make_mlp(batchnorm=True)
    bn = model[1]
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, model=model,
               nonfinite="skip_sample", bn_update=bn_update)  # fmt: skip
    calls = [0]

    def closure():
        calls[0] += 1
        batch = x.clone()
        if calls[0] == 1:
            batch[0, 0] = float("inf")
        loss = nn.functional.cross_entropy(model(batch), y)
        loss.backward()
        return loss

    before = [b.clone() for b in bn.buffers()]
    opt.step(closure)
    assert opt.last_step.took_step and opt.last_step.mask.tolist() == [False, True, True]
    assert torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all()
    assert all(torch.equal(a, b) for a, b in zip(bn.buffers(), before, strict=True))
    model.eval()
    assert torch.isfinite(model(x)).all()


def test_a_good_step_still_keeps_the_first_pass_statistics():
    """The rollback is for steps that do not happen: a normal step keeps the first pass's."""
    x, y = make_regression()
    model = make_mlp(batchnorm=True)
    bn = model[1]
    seen = []

    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        seen.append(bn.running_mean.clone())
        loss.backward()
        return loss

    before = bn.running_mean.clone()
    TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, model=model).step(closure)
    assert torch.equal(bn.running_mean, seen[0]) and not torch.equal(bn.running_mean, before)


class _ThirdPartyBatchNorm(nn.Module):
    """A BatchNorm written outside torch (apex's SyncBatchNorm, synchronized-BatchNorm): the
    public attributes of torch's, not its classes."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.track_running_stats = True
        self.register_buffer("running_mean", torch.zeros(features, dtype=torch.float64))
        self.register_buffer("running_var", torch.ones(features, dtype=torch.float64))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.running_mean.mul_(0.9).add_(0.1 * x.mean(0))
                self.num_batches_tracked += 1
        return x - x.mean(0) if self.training else x - self.running_mean


def test_a_third_party_batchnorm_is_updated_once_per_step_and_measured_in_train_mode():
    from tiltedsam.analysis._model_state import preserved

    x, y = make_regression()
    model = nn.Sequential(nn.Linear(5, 8), _ThirdPartyBatchNorm(8), nn.Linear(8, 3)).double()
    opt = create_optimizer("sam", model.parameters(), "sgd", lr=0.1, model=model)

    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert int(model[1].num_batches_tracked) == 1  # the first pass only, not both
    model.eval()
    with preserved(model, "train"):
        assert model[1].training and not model[0].training


@pytest.mark.parametrize("name", ["sam", "tsam"])
def test_a_lazy_batchnorm_steps_before_its_first_forward(name):
    """Its buffers are uninitialised until the first pass: nothing to keep from before it."""
    x, y = make_regression(dtype=torch.float32)
    model = nn.Sequential(nn.Linear(5, 8), nn.LazyBatchNorm1d(affine=False), nn.Linear(8, 3))
    opt = create_optimizer(name, model.parameters(), "sgd", lr=0.1, model=model)

    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    opt.step(closure)
    assert int(model[1].num_batches_tracked) == 2
