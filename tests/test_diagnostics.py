"""Issue #19: ``opt.last_step`` for every method of the table, with the same fields: the losses
at the step's perturbed points (checked against the losses the closure returned), the step's
return value, whether the base step was taken, and the weights where the method has them
(checked against each method's rule computed here from the closure's losses)."""

import math

import pytest
import torch

from tiltedsam.optim import METHODS, StepDiagnostics, create_optimizer

from .conftest import Shardable, make_mlp, make_regression
from .test_contract import ACTIVE


# Which of the closure's returned losses (in call order) are the step's perturbed points.
def points(name, recorded, opt):
    if name == "erm":
        return recorded
    if name in ("tsam", "tsam-naive"):  # ascent: a pass at θ + ξ_j, then at θ + ε_j
        return recorded[1::2] if opt.sampler.passes_per_sample() == 2 else recorded
    if name in ("tsam-resample", "tsam-stale"):  # the s scored points come first
        return recorded[: opt.num_samples]
    if name in ("tsam-split", "tsam-split-rise"):  # per shard: θ + ξ_j, then θ + ε_j
        return recorded[1::2]
    if name == "tsam-intermittent":  # every = 1: TSAM's passes and nothing else
        return recorded[1::2]
    return recorded[1:]  # a pass at θ (RSAM: θ + δ), then the perturbed points


def expected_weights(name, recorded, losses, opt):
    """Each weighting rule, from the closure's losses (None: the method has no weights)."""
    if name in ("tsam", "tsam-naive", "tsam-resample", "tsam-stale", "tsam-split",
                "tsam-intermittent"):  # fmt: skip
        return torch.softmax(opt.tilt * losses, 0)
    if name == "tsam-split-rise":  # the rise over each shard's first pass
        return torch.softmax(opt.tilt * (losses - torch.stack(recorded[0::2])), 0)
    if name == "esam2":  # the worst candidate
        return (losses == losses.max()).to(losses.dtype)
    if name == "detsam":  # softmax(−d/2), d_i = (L_i − L_0)/ρ²
        rho = opt.defaults["rho"]
        return torch.softmax(-(losses - recorded[0]) / (2 * rho**2), 0)
    return None


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_reports_the_same_diagnostics(name):
    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), lr=0.1, **ACTIVE[name][0])
    assert opt.last_step is None
    recorded = []

    def build(xs, ys):  # split-batch methods cut it into shards
        def closure(backward=True):
            loss = torch.nn.functional.cross_entropy(model(xs), ys)
            if backward:
                loss.backward()
            recorded.append(loss.detach())
            return loss

        return closure

    closure = Shardable(build, x, y)
    for _ in range(2):
        recorded.clear()
        returned = opt.step(closure)
        d = opt.last_step
        assert isinstance(d, StepDiagnostics) and d.took_step is True
        assert d.objective is returned
        assert torch.equal(d.losses, torch.stack(points(name, recorded, opt)))
        reference = expected_weights(name, recorded, d.losses, opt)
        if reference is None:
            assert d.weights is None and d.effective_sample_size is None
            continue
        torch.testing.assert_close(d.weights, reference, rtol=1e-10, atol=1e-12)
        ess = float(d.effective_sample_size)
        assert 1.0 <= ess <= len(d.losses) + 1e-9
        assert ess == pytest.approx(1 / float((reference**2).sum()))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_skipped_step_reports_took_step_false(name):
    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), lr=0.1, nonfinite="skip", **ACTIVE[name][0])

    def build(xs, ys):
        def inf_closure():
            loss = torch.nn.functional.cross_entropy(model(xs), ys) * math.inf
            loss.backward()
            return loss

        return inf_closure

    opt.step(Shardable(build, x, y))
    assert opt.last_step.took_step is False and opt.skipped_steps == 1
