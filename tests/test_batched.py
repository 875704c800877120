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
from tiltedsam.optim.batched import BatchedPath


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


def ineligibility(opt, closure):
    """Why ``opt``'s next step cannot be batched (None if it can)."""
    ctx = opt._begin_step(save_theta=False)
    return opt.batching.ineligibility(ctx, closure, opt.sampler)


def should_batch(opt, closure):
    ctx = opt._begin_step(save_theta=False)
    return opt.batching.should_run(ctx, closure, opt.sampler, opt.num_samples)


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


# ---------------------------------------------------------------- settings found in review
def same_params(a: nn.Module, b: nn.Module, tol: float = 1e-7) -> bool:
    return all(
        torch.allclose(x.double(), y.double(), rtol=tol, atol=tol)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


class WithUnused(nn.Module):
    """A head the forward never calls (as unused poolers in pretrained models)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.used = nn.Linear(5, 3).double()
        self.unused = nn.Linear(5, 3).double()

    def forward(self, x):
        return self.used(x)


def test_unreached_parameters_keep_no_gradient_as_in_the_sequential_path():
    def go(batched):
        model = WithUnused()
        opt = TSAM(model.parameters(), torch.optim.AdamW, lr=0.01, weight_decay=0.1,
                   num_samples=3, seed=0, batched=batched)  # fmt: skip
        for step in range(2):
            x, y = data((5,), seed=step)
            opt.step(make_closure(model, nn.functional.cross_entropy, x, y))
        return model, opt

    (m_seq, o_seq), (m_bat, o_bat) = go(False), go(True)
    assert same_params(m_seq, m_bat)
    assert torch.equal(m_bat.unused.weight, WithUnused().unused.weight)  # no weight decay
    assert len(o_bat.base_optimizer.state) == len(o_seq.base_optimizer.state) == 2


def test_channels_last_parameters_get_the_same_noise():
    def go(batched):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))
        model = model.double().to(memory_format=torch.channels_last)
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, seed=0,
                   batched=batched)  # fmt: skip
        x, y = data((3, 6, 6))
        opt.step(make_closure(model, nn.functional.cross_entropy, x, y))
        return model, opt

    (m_seq, o_seq), (m_bat, o_bat) = go(False), go(True)
    assert not m_seq[0].weight.is_contiguous()  # the case: a non-standard memory layout
    assert torch.allclose(o_seq.last_step.losses, o_bat.last_step.losses, rtol=1e-6)
    assert same_params(m_seq, m_bat)


def test_skip_sample_drops_huge_gradients_like_the_sequential_check():
    """Gradients ~1e25 are finite but their float32 norm overflows: both paths drop them."""

    def loss_fn(out, y):
        return (out - y).square().mean() + 1e25 * torch.relu(out - 0.95).mean()

    def go(batched):
        model = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            model.weight.fill_(0.95)
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=1e-3, tilt=0.0, num_samples=6,
                   rho=0.0, noise_radius=0.1, noise="ball", nonfinite="skip_sample", seed=0,
                   batched=batched)  # fmt: skip
        opt.step(make_closure(model, loss_fn, torch.full((4, 4), 0.25), torch.zeros(4, 1)))
        return model, opt

    (m_seq, o_seq), (m_bat, o_bat) = go(False), go(True)
    assert 0 < o_seq.skipped_samples < 6
    assert torch.equal(o_seq.last_step.mask, o_bat.last_step.mask)
    assert o_bat.skipped_steps == o_seq.skipped_steps == 0
    assert torch.allclose(m_seq.weight, m_bat.weight)


class Keyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(5, 8).double()
        self.b = nn.Linear(8, 3).double()

    def forward(self, *, features, scale):
        return self.b(torch.tanh(self.a(features))) * scale


def test_dict_inputs_adamw_clipping_and_two_phase_step_match():
    def go(batched):
        model = Keyword()
        opt = TSAM(model.parameters(), torch.optim.AdamW, lr=0.01, weight_decay=0.05,
                   num_samples=3, max_grad_norm=0.5, seed=2, batched=batched)  # fmt: skip
        for step in range(3):
            x, y = data((5,), seed=step)
            inputs = {"features": x, "scale": torch.full((len(y), 1), 2.0, dtype=torch.float64)}
            opt.compute_gradient(make_closure(model, nn.functional.cross_entropy, inputs, y))
            opt.step()
        return model

    assert same_params(go(False), go(True))


def test_scalar_shaped_loss_of_shape_one_is_accepted():
    def loss_fn(out, y):
        return nn.functional.cross_entropy(out, y).reshape(1)

    def go(batched):
        model = mlp()
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, seed=0,
                   batched=batched)  # fmt: skip
        x, y = data((5,))
        opt.step(make_closure(model, loss_fn, x, y))
        return model

    assert same_params(go(False), go(True))


def test_auto_given_as_a_non_interned_string():
    opt = TSAM(mlp().parameters(), torch.optim.SGD, lr=0.1, batched="".join(["au", "to"]))
    assert opt.batched == "auto"


class EMA(nn.Module):
    """A buffer other than BatchNorm's, changed in forward: vmap cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(5, 3).double()
        self.register_buffer("ema", torch.zeros(3, dtype=torch.float64))

    def forward(self, x):
        h = self.lin(x)
        with torch.no_grad():
            self.ema.mul_(0.9).add_(0.1 * h.mean(0))
        return h


def test_auto_falls_back_to_the_sequential_step_when_vmap_fails(monkeypatch):
    # Pretend "auto" chooses the batched path where it can (it only does so on CUDA).
    monkeypatch.setattr(
        BatchedPath,
        "should_run",
        lambda self, ctx, closure, sampler, s: (
            self.mode is not False and self.ineligibility(ctx, closure, sampler) is None
        ),
    )

    def go(batched):
        model = EMA()
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, seed=0,
                   batched=batched)  # fmt: skip
        for step in range(2):
            x, y = data((5,), seed=step)
            opt.step(make_closure(model, nn.functional.cross_entropy, x, y))
        return model, opt

    with pytest.warns(RuntimeWarning, match="falling back to the sequential path") as caught:
        m_auto, o_auto = go("auto")
    assert len(caught) == 1  # once per model, not once per step
    assert caught[0].filename == __file__  # points at the caller's opt.step
    m_seq, o_seq = go(False)
    for a, b in zip(m_auto.state_dict().values(), m_seq.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the fallback step is the sequential one, bit for bit
    assert torch.equal(o_auto.generator.get_state(), o_seq.generator.get_state())


def test_forced_batched_on_a_model_vmap_cannot_run_leaves_everything_unchanged():
    model = EMA()
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, seed=0,
               batched=True)  # fmt: skip
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = opt.generator.get_state()
    x, y = data((5,))
    with pytest.raises(ValueError, match=r"batched=True cannot be used here: torch\.func\.vmap"):
        opt.step(make_closure(model, nn.functional.cross_entropy, x, y))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(opt.generator.get_state(), rng)
    assert opt.step_count == 0


def test_batchnorm_cumulative_average_is_rejected():
    model = bn_cnn()
    model[1].momentum = None
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, model=model, batched=True)
    x, y = data((2, 8))
    with pytest.raises(ValueError, match="momentum=None"):
        opt.step(make_closure(model, nn.functional.cross_entropy, x, y))


@pytest.mark.parametrize("batched", [False, True])
def test_half_precision_gradient_norm_above_65504_still_ascends(batched):
    """‖g‖ ≈ 1e5 overflows a float16 norm; the ascent must use a wider accumulator."""

    def loss_fn(out, y):
        return (300.0 * out.float()).mean() - y.mean()

    def perturbed_loss(dtype):
        torch.manual_seed(0)
        model = nn.Linear(1024, 1, bias=False).to(dtype)
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.0, num_samples=2, rho=0.5,
                   noise_radius=0.0, seed=0, batched=batched)  # fmt: skip
        x, y = torch.full((4, 1024), 10.0, dtype=dtype), torch.zeros(4)
        opt.step(make_closure(model, loss_fn, x, y))
        return opt.last_step.losses

    half, single = perturbed_loss(torch.float16), perturbed_loss(torch.float32)
    # The ascent raises the linear loss by ρ‖g‖ ≈ 4.8e4 in float32; float16 must agree.
    assert single[0] > 1e4
    assert torch.allclose(half.float(), single, rtol=1e-2)


class ShapeRouted(nn.Module):
    """Uses head ``a`` for batches of 12 and head ``b`` otherwise."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(5, 3).double()
        self.b = nn.Linear(5, 3).double()

    def forward(self, x):
        return self.a(x) if len(x) == 12 else self.b(x)


def test_reached_parameters_follow_the_input_shapes():
    def go(batched):
        model = ShapeRouted()
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=3, seed=0,
                   batched=batched)  # fmt: skip
        for n in (12, 8):
            x, y = data((5,), n=n)
            opt.step(make_closure(model, nn.functional.cross_entropy, x, y))
        return model

    seq, bat = go(False), go(True)
    assert not torch.equal(bat.b.weight, ShapeRouted().b.weight)  # head b did train
    assert same_params(seq, bat)


class Tempered(nn.Module):
    """A 0-dim trainable parameter (a learnable temperature) beside BatchNorm."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.bn = nn.Linear(5, 3).double(), nn.BatchNorm1d(3).double()
        self.temp = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
        self.fail = fail

    def forward(self, x):
        if self.fail:
            raise KeyError("a model that fails for a reason of its own")
        return self.bn(self.lin(x)) / self.temp


@pytest.mark.parametrize("nonfinite", ["raise", "skip_sample"])
def test_a_zero_dim_parameter_matches_the_sequential_path(nonfinite):
    def one(batched):
        model = Tempered()
        opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=4, seed=7,
                   batched=batched, model=model, nonfinite=nonfinite)  # fmt: skip
        for step in range(3):
            opt.step(make_closure(model, nn.functional.cross_entropy, *data((5,), seed=step)))
        return model

    assert same_params(one(True), one(False))


def test_any_failure_of_the_batched_pass_leaves_statistics_and_noise_as_they_were():
    model = Tempered(fail=True)
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, num_samples=4, batched=True,
               model=model)  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    noise = opt.generator.get_state()
    with pytest.raises(KeyError, match="reason of its own"):
        opt.step(make_closure(model, nn.functional.cross_entropy, *data((5,))))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(noise, opt.generator.get_state())
