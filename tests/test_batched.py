"""TSAM's batched (vmap) path against the sequential path it replaces.

Both paths draw the same noise from the optimizer's generator, so on the same model, data and
seed they must give the same parameters, losses, BatchNorm statistics and RNG state up to float
rounding (float64 here).  The sequential path is itself checked against brute-force references
in test_optimizers.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tiltedsam import make_closure
from tiltedsam.optim import TSAM
from tiltedsam.optim.batched import ineligibility, should_batch


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3)
    ).double()


def data(shape: tuple[int, ...], n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=g
    )


def run(make_model, shape, batched: bool, steps: int = 3, groups: bool = False, **kwargs):
    model = make_model()
    if groups:  # two param groups with their own radii
        params = [
            {"params": list(model[0].parameters()), "rho": 0.2, "noise_radius": 0.3},
            {"params": list(model[-1].parameters())},
        ]
    else:
        params = model.parameters()
    opt = TSAM(params, torch.optim.SGD, lr=0.1, momentum=0.9, seed=7, batched=batched, **kwargs)
    objectives, losses = [], []
    for step in range(steps):
        x, y = data(shape, seed=step)
        objectives.append(opt.step(make_closure(model, nn.functional.cross_entropy, x, y)))
        losses.append(opt.last_step.losses)
    return model, opt, torch.stack(objectives), torch.stack(losses)


def assert_same(a, b, tol=1e-7):
    # Not 1e-12: the losses are float32 (make_closure's .float()), so the tilted weights of
    # both paths carry float32 rounding (~1e-7 relative) into the float64 update.
    (model_a, opt_a, obj_a, loss_a), (model_b, opt_b, obj_b, loss_b) = a, b
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values(),
                              strict=True):  # fmt: skip
        assert torch.allclose(pa.double(), pb.double(), rtol=tol, atol=tol), name
    assert torch.allclose(obj_a.double(), obj_b.double(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(loss_a.double(), loss_b.double(), rtol=1e-6, atol=1e-6)
    assert torch.equal(opt_a.generator.get_state(), opt_b.generator.get_state())
    assert opt_a.closure_calls == opt_b.closure_calls
    assert opt_a.step_count == opt_b.step_count


@pytest.mark.parametrize("tilt", [0.0, 1.0, 20.0, math.inf])
@pytest.mark.parametrize("noise", ["gaussian", "ball"])
def test_ascent_matches_sequential(tilt, noise):
    kwargs = {"tilt": tilt, "num_samples": 3, "rho": 0.1, "noise_radius": 0.5, "noise": noise}
    seq = run(mlp, (5,), False, **kwargs)
    bat = run(mlp, (5,), True, **kwargs)
    assert_same(seq, bat)
    # The parameters did move: equality is not trivial.
    assert not torch.allclose(seq[0][0].weight, mlp()[0].weight)


def test_param_groups_and_delta_match_sequential():
    kwargs = {"tilt": 5.0, "num_samples": 4, "rho": 0.05, "delta": 0.5, "groups": True}
    assert_same(run(mlp, (5,), False, **kwargs), run(mlp, (5,), True, **kwargs))


def test_uniform_sampler_matches_sequential():
    kwargs = {"tilt": 2.0, "num_samples": 5, "rho": 0.3, "sampler": "uniform"}
    assert_same(run(mlp, (5,), False, **kwargs), run(mlp, (5,), True, **kwargs))


def test_batchnorm_first_pass_statistics_match_sequential():
    def go(batched):
        model = bn_cnn()
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, tilt=1.0, num_samples=3,
                   noise_radius=0.5, model=model, seed=3, batched=batched)  # fmt: skip
        for step in range(3):
            x, y = data((2, 8), seed=step)
            opt.step(make_closure(model, nn.functional.cross_entropy, x, y))
        return model, opt, torch.zeros(1), opt.last_step.losses

    seq, bat = go(False), go(True)
    assert_same(seq, bat)
    assert int(bat[0][1].num_batches_tracked) == 3  # once per step, not once per pass
    assert not torch.allclose(bat[0][1].running_mean, torch.zeros(4).double())


def test_skip_sample_drops_the_same_samples():
    """The loss is NaN wherever the perturbed weight exceeds 1: some samples drop out."""

    def loss_fn(out, y):
        return (out - y).square().mean() + torch.log(1.0 - out).mean()

    def go(batched):
        model = nn.Linear(1, 1, bias=False).double()
        with torch.no_grad():
            model.weight.fill_(0.95)
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.01, tilt=1.0, num_samples=6,
                   rho=0.01, noise_radius=0.1, noise="ball", nonfinite="skip_sample", seed=0,
                   batched=batched)  # fmt: skip
        x = torch.ones(4, 1, dtype=torch.float64)
        y = torch.zeros(4, 1, dtype=torch.float64)
        for _ in range(2):
            opt.step(make_closure(model, loss_fn, x, y))
        return model, opt

    (m_seq, o_seq), (m_bat, o_bat) = go(False), go(True)
    assert 0 < o_seq.skipped_samples < 12
    assert o_bat.skipped_samples == o_seq.skipped_samples
    assert torch.equal(o_bat.last_step.mask, o_seq.last_step.mask)
    assert torch.allclose(m_bat.weight, m_seq.weight, rtol=1e-7, atol=1e-9)
    assert torch.isfinite(m_bat.weight).all()


def test_auto_stays_sequential_on_cpu():
    model = mlp()
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=8)
    x, y = data((5,))
    closure = make_closure(model, nn.functional.cross_entropy, x, y)
    assert ineligibility(opt, closure) is None
    assert should_batch(opt, closure) is False
    opt.batched = True
    assert should_batch(opt, closure) is True


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"closure": "plain"}, "make_closure"),
        ({"accumulation_steps": 2}, "accumulation_steps"),
        ({"sampler": "hmc"}, "sampler"),
        ({"bn_without_model": True}, "BatchNorm"),
        ({"bn_update": "every"}, "BatchNorm"),
    ],
)
def test_forced_batched_names_why_it_cannot_run(change, reason):
    bn = "bn_without_model" in change or "bn_update" in change
    model = bn_cnn() if bn else mlp()
    x, y = data((2, 8) if bn else (5,))
    kwargs = {"sampler": change.get("sampler", "ascent")}
    if "bn_update" in change:
        kwargs.update(model=model, bn_update="every")
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, batched=True, **kwargs)
    if change.get("closure") == "plain":

        def closure():
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

    else:
        closure = make_closure(model, nn.functional.cross_entropy, x, y,
                               accumulation_steps=change.get("accumulation_steps", 1))  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=f"batched=True.*{reason}"):
        opt.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_batched_option_is_validated(value):
    with pytest.raises(ValueError, match="batched must be 'auto', True or False"):
        TSAM(mlp().parameters(), torch.optim.SGD, lr=0.1, batched=value)


def test_batched_step_reads_nothing_on_the_host():
    from tests.test_performance import HostReads

    model = bn_cnn().float()
    x, y = data((2, 8))
    closure = make_closure(model, nn.functional.cross_entropy, x.float(), y)
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, model=model,
               nonfinite="unchecked", batched=True)  # fmt: skip
    opt.step(closure)
    with HostReads() as reads:
        opt.step(closure)
    assert reads.count == 0
    opt.nonfinite = "raise"  # the default: one read, the finiteness check
    with HostReads() as reads:
        opt.step(closure)
    assert reads.count == 1


def test_bench_times_the_batched_path(tmp_path):
    import json

    from tiltedsam.cli import main

    out = tmp_path / "bench.json"
    code = main(["bench", "--models", "mlp", "--samples", "2", "--methods", "erm,tsam,batched",
                 "--repeats", "2", "--warmup", "0", "--batch-size", "8", "--no-memory",
                 "--json", str(out)])  # fmt: skip
    assert code == 0
    ratios = json.loads(out.read_text())["ratios"]
    assert ratios[0]["batched_over_tsam_cpu"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_batches_and_matches_sequential():
    def go(batched):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).cuda()
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=4, seed=1,
                   batched=batched)  # fmt: skip
        x, y = (t.cuda() for t in data((5,)))
        closure = make_closure(model, nn.functional.cross_entropy, x.float(), y)
        chosen = should_batch(opt, closure)
        opt.step(closure)
        return model, chosen

    (m_auto, chosen_auto), (m_seq, chosen_seq) = go("auto"), go(False)
    assert chosen_auto and not chosen_seq
    for a, b in zip(m_auto.parameters(), m_seq.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
