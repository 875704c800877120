"""TSAM and SAM against hand-written float64 references, and their contracts."""

import math

import pytest
import torch

from tiltedsam import SAM, TSAM, HMCSampler, create_optimizer, tilted_weights
from tiltedsam._tensors import global_norm

from .conftest import closure_for, make_mlp, make_regression


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def loss_and_grads(model, x, y, params):
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), [g.detach() for g in grads]


def test_sam_step_equals_two_pass_reference(float64):
    x, y = make_regression()
    model, ref = make_mlp(), make_mlp()
    opt = SAM(
        model.parameters(), torch.optim.SGD, rho=0.1, lr=0.05, momentum=0.9, weight_decay=1e-3
    )
    ref_params = list(ref.parameters())
    ref_opt = torch.optim.SGD(ref_params, lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        loss = opt.step(closure_for(model, x, y))
        ref_loss, g0 = loss_and_grads(ref, x, y, ref_params)
        norm = torch.sqrt(sum((g**2).sum() for g in g0))
        eps = [0.1 * g / (norm + 1e-12) for g in g0]
        with torch.no_grad():
            for p, e in zip(ref_params, eps, strict=True):
                p.add_(e)
        _, g1 = loss_and_grads(ref, x, y, ref_params)
        with torch.no_grad():
            for p, e, g in zip(ref_params, eps, g1, strict=True):
                p.sub_(e)
                p.grad = g
        ref_opt.step()
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
        torch.testing.assert_close(flat(model), flat(ref), rtol=1e-12, atol=1e-14)


def test_asam_step_equals_reference(float64):
    x, y = make_regression()
    model, ref = make_mlp(), make_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, lr=0.05)
    ref_params = list(ref.parameters())
    opt.step(closure_for(model, x, y))
    _, g0 = loss_and_grads(ref, x, y, ref_params)
    norm = torch.sqrt(sum(((p.abs() * g) ** 2).sum() for p, g in zip(ref_params, g0, strict=True)))
    eps = [0.5 * p.detach() ** 2 * g / (norm + 1e-12) for p, g in zip(ref_params, g0, strict=True)]
    with torch.no_grad():
        for p, e in zip(ref_params, eps, strict=True):
            p.add_(e)
    _, g1 = loss_and_grads(ref, x, y, ref_params)
    with torch.no_grad():
        for p, e, g in zip(ref_params, eps, g1, strict=True):
            p.sub_(e).sub_(0.05 * g)
    torch.testing.assert_close(flat(model), flat(ref), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("t", [0.0, 1.0, 20.0, math.inf])
@pytest.mark.parametrize("delta", [0.0, 0.5])
@pytest.mark.parametrize("noise", ["gaussian", "ball"])
def test_tsam_ascent_step_equals_brute_force_reference(float64, t, delta, noise):
    """Paper Alg. 1+2 written out directly, with s stored gradients and the same noise stream."""
    x, y = make_regression()
    model, ref = make_mlp(), make_mlp()
    s, rho, radius, lr = 4, 0.3, 0.5, 0.1
    opt = TSAM(
        model.parameters(),
        torch.optim.SGD,
        tilt=t,
        num_samples=s,
        rho=rho,
        noise_radius=radius,
        noise=noise,
        delta=delta,
        seed=7,
        lr=lr,
        momentum=0.9,
    )
    ref_params = list(ref.parameters())
    ref_opt = torch.optim.SGD(ref_params, lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(7)
    dim = sum(p.numel() for p in ref_params)
    for _ in range(3):
        objective = opt.step(closure_for(model, x, y))
        theta = [p.detach().clone() for p in ref_params]
        losses, grads = [], []
        for _ in range(s):
            n = [torch.empty_like(p).normal_(generator=gen) for p in ref_params]
            n_norm = torch.sqrt(sum((v**2).sum() for v in n))
            if noise == "gaussian":
                xi = [v * min(float(n_norm), radius) / n_norm for v in n]
            else:
                u = torch.rand((), generator=gen, dtype=torch.float64)
                xi = [v * radius * u ** (1 / dim) / n_norm for v in n]
            with torch.no_grad():
                for p, th, e in zip(ref_params, theta, xi, strict=True):
                    p.copy_(th + e)
            _, g = loss_and_grads(ref, x, y, ref_params)
            g_norm = torch.sqrt(sum((v**2).sum() for v in g))
            with torch.no_grad():
                for p, v in zip(ref_params, g, strict=True):
                    p.add_(rho * v / (g_norm + 1e-12))
            loss_j, g_j = loss_and_grads(ref, x, y, ref_params)
            losses.append(loss_j)
            grads.append(g_j)
            with torch.no_grad():
                for p, th in zip(ref_params, theta, strict=True):
                    p.copy_(th)
        losses = torch.stack(losses)
        weight_tilt = t if math.isinf(t) else (1 - delta) * t
        if math.isinf(weight_tilt):
            w = (losses == losses.max()).double()
            w = w / w.sum()
        else:
            w = torch.exp(weight_tilt * losses)
            w = w / w.sum()
        for i, p in enumerate(ref_params):
            p.grad = sum(w[j] * grads[j][i] for j in range(s))
        ref_opt.step()
        torch.testing.assert_close(flat(model), flat(ref), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(opt.last_step.losses, losses, rtol=1e-12, atol=0)
        torch.testing.assert_close(opt.last_step.weights, w, rtol=1e-10, atol=1e-12)
        expected = (
            losses.max()
            if math.isinf(t)
            else (losses.mean() if t == 0 else torch.log(torch.exp(t * losses).mean()) / t)
        )
        assert float(objective) == pytest.approx(float(expected), rel=1e-12)


def _base_only_run(opt_factory, base_factory, steps=10, dtype=torch.float64):
    x, y = make_regression(dtype=dtype)
    model, ref = make_mlp(dtype=dtype), make_mlp(dtype=dtype)
    opt, ref_opt = opt_factory(model.parameters()), base_factory(ref.parameters())
    for _ in range(steps):
        opt.step(closure_for(model, x, y))
        ref_opt.zero_grad()
        closure_for(ref, x, y)()
        ref_opt.step()
    return flat(model), flat(ref)


@pytest.mark.parametrize(
    "base,kw",
    [
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}),
        (torch.optim.AdamW, {"lr": 1e-2}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_radius_zero_reproduces_base_optimizer_bit_for_bit(base, kw, dtype):
    a, b = _base_only_run(
        lambda ps: SAM(ps, base, rho=0.0, **kw), lambda ps: base(ps, **kw), dtype=dtype
    )
    assert torch.equal(a, b)
    for sampler in ["ascent", "uniform", "hmc"]:
        a, b = _base_only_run(
            lambda ps, sampler=sampler: TSAM(
                ps, base, tilt=0.0, num_samples=1, rho=0.0, noise_radius=0.0, sampler=sampler, **kw
            ),
            lambda ps: base(ps, **kw),
            dtype=dtype,
        )
        assert torch.equal(a, b), sampler


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda ps: SAM(ps, torch.optim.SGD, lr=0.1), 2),
        (lambda ps: TSAM(ps, torch.optim.SGD, num_samples=3, lr=0.1), 6),
        (lambda ps: TSAM(ps, torch.optim.SGD, num_samples=5, sampler="uniform", lr=0.1), 5),
        (
            lambda ps: TSAM(
                ps, torch.optim.SGD, num_samples=2, sampler=HMCSampler(steps=3), lr=0.1
            ),
            8,
        ),
    ],
)
def test_closure_calls_per_step_match_documented_pass_count(make, expected):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = make(model.parameters())
    calls = []
    base = closure_for(model, x, y)

    def closure():
        calls.append(1)
        return base()

    for _ in range(3):
        opt.step(closure)
    assert len(calls) == 3 * expected == 3 * opt.passes_per_step == opt.closure_calls


def _train(opt_factory, steps, model=None, x=None, y=None):
    x, y = make_regression() if x is None else (x, y)
    model = make_mlp() if model is None else model
    opt = opt_factory(model.parameters())
    for _ in range(steps):
        opt.step(closure_for(model, x, y))
    return model, opt


@pytest.mark.parametrize("sampler", ["ascent", "uniform", HMCSampler(steps=2, mh=True)])
def test_state_dict_round_trip_resumes_identically(float64, sampler):
    def factory(ps):
        s = sampler if isinstance(sampler, str) else HMCSampler(steps=2, mh=True)
        return TSAM(
            ps,
            torch.optim.SGD,
            tilt=5.0,
            tilt_schedule="warmup",
            total_steps=8,
            sampler=s,
            delta=0.5,
            seed=3,
            lr=0.1,
            momentum=0.9,
        )

    full, _ = _train(factory, 8)
    x, y = make_regression()
    model, opt = _train(factory, 4)
    state = {"model": model.state_dict(), "opt": opt.state_dict()}
    assert opt.state_dict()["state"], "momentum buffers are in the checkpoint"
    model2 = make_mlp(seed=99)
    opt2 = factory(model2.parameters())
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    assert opt2.step_count == 4 and opt2.tilt == pytest.approx(5.0 * 4 / 8)
    for _ in range(4):
        opt2.step(closure_for(model2, x, y))
    assert torch.equal(flat(model2), flat(full))


def test_lr_scheduler_and_param_groups_drive_the_base_optimizer(float64):
    x, y = make_regression()
    model = make_mlp()
    first, second = model[0], model[2]
    opt = TSAM(
        [
            {"params": first.parameters(), "lr": 0.0},
            {"params": second.parameters(), "lr": 0.1, "rho": 0.0},
        ],
        torch.optim.SGD,
        tilt=1.0,
        lr=0.5,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    before = [p.detach().clone() for p in first.parameters()]
    opt.step(closure_for(model, x, y))
    sched.step()
    assert all(torch.equal(a, b) for a, b in zip(before, first.parameters(), strict=True))
    assert opt.base_optimizer.param_groups[1]["lr"] == pytest.approx(0.05)
    assert opt.param_groups is opt.base_optimizer.param_groups


def test_frozen_and_unreached_parameters_are_left_alone(float64):
    x, y = make_regression()
    model = make_mlp()
    unused = torch.nn.Parameter(torch.ones(3))
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    opt = TSAM(
        [*model.parameters(), unused],
        torch.optim.SGD,
        tilt=1.0,
        lr=0.1,
        momentum=0.9,
        weight_decay=0.1,
    )
    # `unused` never enters the loss: its gradient stays None.  Weight decay with a None grad
    # is skipped by SGD, so the tensor must come back bit for bit after noise is removed.
    for _ in range(3):
        opt.step(closure_for(model, x, y))
    assert torch.equal(model[0].weight, frozen)
    assert unused.grad is None
    assert torch.equal(unused.detach(), torch.ones(3))
    assert not opt.base_optimizer.state.get(unused)


def test_batchnorm_running_stats_update_once_per_step(float64):
    x, y = make_regression()
    model = make_mlp(batchnorm=True)
    bn = model[1]
    seen = []
    base = closure_for(model, x, y)

    def closure():
        loss = base()
        seen.append(bn.running_mean.clone())
        return loss

    opt = TSAM(model.parameters(), torch.optim.SGD, num_samples=3, model=model, lr=0.1)
    opt.step(closure)
    assert int(bn.num_batches_tracked) == 1
    assert torch.equal(bn.running_mean, seen[0])
    every = TSAM(
        model.parameters(), torch.optim.SGD, num_samples=3, model=model, bn_update="every", lr=0.1
    )
    every.step(closure)
    assert int(bn.num_batches_tracked) == 1 + every.passes_per_step


def test_tilt_schedules_follow_the_step_count():
    x, y = make_regression(dtype=torch.float32)
    for kind, expected in [
        ("warmup", [0.0, 2.5, 5.0, 7.5, 10.0, 10.0]),
        ("decay", [10.0, 7.5, 5.0, 2.5, 0.0, 0.0]),
        ("constant", [10.0] * 6),
    ]:
        model = make_mlp(dtype=torch.float32)
        opt = TSAM(
            model.parameters(),
            torch.optim.SGD,
            tilt=10.0,
            tilt_schedule=kind,
            total_steps=4,
            lr=0.01,
        )
        seen = []
        for _ in range(6):
            opt.step(closure_for(model, x, y))
            seen.append(opt.last_step.tilt)
        assert seen == pytest.approx(expected)


def test_diagnostics_are_consistent(float64):
    x, y = make_regression()
    model = make_mlp()
    opt = TSAM(model.parameters(), torch.optim.SGD, tilt=3.0, num_samples=4, delta=0.5, lr=0.1)
    opt.step(closure_for(model, x, y))
    d = opt.last_step
    assert d.weights.sum() == pytest.approx(1.0)
    torch.testing.assert_close(d.weights, tilted_weights(d.losses, 1.5))
    assert 1.0 <= float(d.effective_sample_size) <= 4.0
    assert d.took_step and d.weight_tilt == 1.5


def test_hmc_stays_in_rho_ball_and_reports_acceptance(float64):
    x, y = make_regression()
    model = make_mlp()
    rho = 0.05
    sampler = HMCSampler(steps=3, step_size=0.05, sigma=0.01, mh=True)
    opt = TSAM(
        model.parameters(),
        torch.optim.SGD,
        tilt=10.0,
        delta=0.5,
        rho=rho,
        num_samples=3,
        sampler=sampler,
        lr=0.1,
        seed=0,
    )
    base = closure_for(model, x, y)
    dists = []

    def closure():
        theta = opt.context.theta
        dists.append(
            float(
                global_norm(
                    [p.detach() - t for p, t in zip(model.parameters(), theta, strict=True)]
                )
            )
        )
        return base()

    for _ in range(5):
        opt.step(closure)
    assert max(dists) <= rho * (1 + 1e-9)
    assert sampler.proposals == 15
    assert 0.0 <= sampler.acceptance_rate <= 1.0
    rejected = sampler.proposals - sampler.accepted
    assert opt.closure_calls == 5 * opt.passes_per_step + rejected


def test_create_optimizer_registry():
    model = make_mlp(dtype=torch.float32)
    erm = create_optimizer("erm", model.parameters(), lr=0.1)
    assert type(erm).__name__ == "ERM" and isinstance(erm.base_optimizer, torch.optim.SGD)
    assert isinstance(create_optimizer("sam", model.parameters(), lr=0.1), SAM)
    asam = create_optimizer("asam", model.parameters(), base="adamw", lr=0.1)
    assert asam.defaults["adaptive"] and isinstance(asam.base_optimizer, torch.optim.AdamW)
    assert isinstance(create_optimizer("TSAM", model.parameters(), tilt=2.0, lr=0.1), TSAM)
    with pytest.raises(ValueError, match="unknown method 'adahessian'"):
        create_optimizer("adahessian", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="base"):
        create_optimizer("sam", model.parameters(), base="lion", lr=0.1)


@pytest.mark.parametrize("s", [1, 8])
def test_extra_memory_is_independent_of_num_samples(s):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = TSAM(model.parameters(), torch.optim.SGD, num_samples=s, lr=0.1)
    opt.step(closure_for(model, x, y))
    assert opt.extra_buffers == 2  # saved θ and the running tilted sum
    hmc = TSAM(model.parameters(), torch.optim.SGD, num_samples=s, sampler="hmc", lr=0.1)
    hmc.step(closure_for(model, x, y))
    assert hmc.extra_buffers == 3  # plus the momentum
