"""``make_closure`` honours the ``backward=`` protocol of TSAMResample's scoring passes: its
forward-only passes run no backward, and the result equals a hand-written closure's."""

import pytest
import torch
from torch.nn import functional as F

from tiltedsam import make_closure
from tiltedsam.optim import TSAMResample
from tiltedsam.optim.tsam_resample import accepts_backward_flag

from .conftest import make_mlp, make_regression


def count_backwards(model):
    """A list that grows by one each time a backward pass reaches the first weight."""
    calls = []
    next(model.parameters()).register_post_accumulate_grad_hook(lambda p: calls.append(1))
    return calls


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_make_closure_takes_the_backward_flag():
    x, y = make_regression()
    closure = make_closure(make_mlp(), F.cross_entropy, x, y)
    assert accepts_backward_flag(closure)


@pytest.mark.parametrize("ascent,backwards", [("selected", 2), ("shared", 2), ("none", 1)])
@pytest.mark.parametrize("accumulation", [1, 3])
def test_tsam_resample_with_make_closure_scores_forward_only(ascent, backwards, accumulation):
    """s = 4 scoring passes run forward only: 2 backward passes per step (1 for ascent=none),
    times the micro-batches, as with a hand-written ``closure(backward=True)``; the parameters
    are those of the hand-written closure bit for bit."""
    x, y = make_regression(n=24)
    ours, hand = make_mlp(), make_mlp()
    calls = count_backwards(ours)
    hand_calls = count_backwards(hand)
    kw = {"tilt": 5.0, "num_samples": 4, "ascent": ascent, "seed": 1, "lr": 0.1}
    opt = TSAMResample(ours.parameters(), torch.optim.SGD, **kw)
    ref = TSAMResample(hand.parameters(), torch.optim.SGD, **kw)

    def closure(backward=True):
        loss = F.cross_entropy(hand(x), y)  # float64 here: make_closure keeps the model's dtype
        if backward:
            loss.backward()
        return loss

    steps = 3
    for _ in range(steps):
        opt.step(make_closure(ours, F.cross_entropy, x, y, accumulation_steps=accumulation))
        ref.step(closure)
    assert len(hand_calls) == steps * backwards
    assert len(calls) == steps * backwards * accumulation
    assert opt.closure_calls == ref.closure_calls == steps * opt.passes_per_step
    if accumulation == 1:
        assert torch.equal(flat(ours), flat(hand))
        assert torch.equal(opt.last_step.losses, ref.last_step.losses)
    else:  # micro-batch losses summed: equal to rounding
        assert torch.allclose(flat(ours), flat(hand), rtol=0, atol=1e-12)


def test_forward_only_loss_equals_the_backward_pass_loss():
    """``closure(backward=False)`` returns the same number and leaves no gradient."""
    x, y = make_regression(n=20)
    model = make_mlp()
    closure = make_closure(model, F.cross_entropy, x, y, accumulation_steps=3)
    with torch.no_grad():
        quiet = closure(backward=False)
    assert all(p.grad is None for p in model.parameters())
    loud = closure()
    assert torch.equal(quiet, loud)
    assert all(p.grad is not None for p in model.parameters())
