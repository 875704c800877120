"""The estimators of issue #21 against brute-force implementations of their formulas (float64;
the reference replays the optimizer's generator, so noise, Gumbel draws and per-group ρ and
radius are all checked), their limits, kept state, resumption and the harness."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from tiltedsam import TSAM, create_optimizer, make_closure
from tiltedsam.optim.tsam_intermittent import TSAMIntermittent
from tiltedsam.optim.tsam_resample import TSAMResample
from tiltedsam.optim.tsam_split import TSAMSplit

LR, RHO = 0.1, 0.2


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _problem(n: int = 12):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    x, y = torch.randn(n, 4), torch.randint(0, 3, (n,))
    return model, x, y


def _loss(model, params, x, y):
    out = torch.func.functional_call(
        model, dict(zip([n for n, _ in model.named_parameters()], params, strict=True)), (x,)
    )
    return torch.nn.functional.cross_entropy(out, y)


def _grad(model, params, x, y):
    params = [p.detach().requires_grad_(True) for p in params]
    loss = _loss(model, params, x, y)
    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, params)]


def _norm(vs):
    return torch.sqrt(sum((v * v).sum() for v in vs))


# Two parameter groups with their own ρ and noise radius: every per-group option is exercised.
GROUPS = ({"rho": 0.2, "noise_radius": 0.5}, {"rho": 0.05, "noise_radius": 0.3})


def _groups(model):
    first, second = model[0], model[2]
    return [{"params": list(first.parameters()), **GROUPS[0]},
            {"params": list(second.parameters()), **GROUPS[1]}]  # fmt: skip


def _per_group(values, model):
    """``values`` per parameter of ``model`` (group 0: the first layer's two, group 1: the rest)."""
    return [values[0]] * 2 + [values[1]] * (len(list(model.parameters())) - 2)


def _noise(generator, theta, radii):
    """ξ as the optimizer draws it: z ~ N(0, I) per parameter in order from its generator, then
    group g scaled by min(r_g/‖z‖, 1) (‖z‖ over all groups)."""
    z = [torch.empty_like(p).normal_(generator=generator) for p in theta]
    norm = _norm(z)
    return [zi * min(r / norm, 1.0) for zi, r in zip(z, radii, strict=True)]


def _ascend(point, g, rhos):
    scale = 1.0 / _norm(g)
    return [p + rho * scale * gi for p, gi, rho in zip(point, g, rhos, strict=True)]


def _replay(opt):
    """A generator in the state the optimizer's is in now (the reference draws the same ξ)."""
    generator = torch.Generator()
    generator.set_state(opt.generator.get_state())
    return generator


def _tilt_weights(keys, t, prior):
    """softmax(t·key + log prior) by brute force (t = inf: the ties of the max, by prior)."""
    if t == float("inf"):
        w = (keys == keys.max()).double() * prior
    else:
        w = torch.exp(t * (keys - keys.max())) * prior
    return w / w.sum()


@pytest.mark.parametrize("tilt_on", ["loss", "rise"])
@pytest.mark.parametrize("t", [0.0, 2.0, float("inf")])
def test_split_batch_equals_the_formula(t, tilt_on):
    """Noise on, two groups, s = 3 shards of a batch of 10 (sizes 4, 3, 3): shard j gets its own
    ξ_j and ascent, the weights are ∝ n_j·exp(t·k_j), the objective log Σ (n_j/N) e^{tL_j} / t."""
    model, x, y = _problem(10)
    theta = [p.detach().clone() for p in model.parameters()]
    rhos, radii = (
        _per_group([g["rho"] for g in GROUPS], model),
        _per_group([g["noise_radius"] for g in GROUPS], model),
    )
    opt = TSAMSplit(_groups(model), torch.optim.SGD, tilt=t, num_samples=3, tilt_on=tilt_on,
                    lr=LR, seed=7)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    prior = torch.tensor([4.0, 3.0, 3.0])
    for _ in range(3):
        generator = _replay(opt)
        objective = opt.step(closure)
        keys, losses, grads = [], [], []
        for xs, ys in zip(torch.tensor_split(x, 3), torch.tensor_split(y, 3), strict=True):
            start = [p + e for p, e in zip(theta, _noise(generator, theta, radii), strict=True)]
            start_loss, g = _grad(model, start, xs, ys)
            loss, gp = _grad(model, _ascend(start, g, rhos), xs, ys)
            keys.append(loss - start_loss if tilt_on == "rise" else loss)
            losses.append(loss)
            grads.append(gp)
        w = _tilt_weights(torch.stack(keys), t, prior)
        combined = [sum(w[j] * grads[j][i] for j in range(3)) for i in range(len(theta))]
        theta = [p - LR * g for p, g in zip(theta, combined, strict=True)]
        losses = torch.stack(losses)
        if t == 0.0:
            expected = (prior * losses).sum() / prior.sum()
        elif t == float("inf"):
            expected = losses.max()
        else:
            expected = torch.log((prior / prior.sum() * torch.exp(t * losses)).sum()) / t
        torch.testing.assert_close(objective, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(opt.last_step.weights, w if tilt_on == "loss" or t == 0.0
                                   else _tilt_weights(torch.stack(keys), t, prior))  # fmt: skip
    for p, r in zip(model.parameters(), theta, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert opt.closure_calls == 3 * 2 * 3


def test_split_batch_at_t0_without_perturbation_is_the_batch_mean_gradient():
    """Shards of 4, 3 and 3: at t = 0, ρ = 0 and no noise the step is plain SGD on the batch."""
    model, x, y = _problem(10)
    twin = copy.deepcopy(model)
    opt = TSAMSplit(model.parameters(), torch.optim.SGD, tilt=0.0, num_samples=3, rho=0.0,
                    noise_radius=0.0, lr=LR)  # fmt: skip
    loss = opt.step(make_closure(model, torch.nn.functional.cross_entropy, x, y))
    whole, g = _grad(twin, [p.detach() for p in twin.parameters()], x, y)
    torch.testing.assert_close(loss, whole, rtol=1e-13, atol=1e-13)
    for p, q, gi in zip(model.parameters(), twin.parameters(), g, strict=True):
        torch.testing.assert_close(p.detach(), q.detach() - LR * gi, rtol=1e-13, atol=1e-13)


def test_split_batch_with_one_shard_is_tsam_with_one_sample():
    results = []
    for cls in (TSAMSplit, TSAM):
        model, x, y = _problem()
        opt = cls(
            model.parameters(), torch.optim.SGD, tilt=5.0, num_samples=1, rho=RHO, seed=3, lr=LR
        )
        closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
        for _ in range(3):
            opt.step(closure)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_split_batch_needs_shards_and_says_how():
    model, x, y = _problem()
    opt = TSAMSplit(model.parameters(), torch.optim.SGD, num_samples=3, lr=LR)

    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match="make_closure"):
        opt.step(closure)
    with pytest.raises(ValueError, match=r"1 to num_samples = 3 shard closures.*sequence of 4"):
        opt.step([closure] * 4)
    with pytest.raises(TypeError, match="shard closure 1 is a str"):
        opt.step([closure, "loss"])
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


def test_model_closure_shards_cover_the_batch():
    model, x, y = _problem(10)
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    shards = closure.shards(3)
    assert [len(s.targets) for s in shards] == [4, 3, 3]
    assert torch.equal(torch.cat([s.targets for s in shards]), y)
    with torch.no_grad():
        whole = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
        parts = sum(torch.nn.functional.cross_entropy(model(s.inputs), s.targets, reduction="sum")
                    for s in shards)  # fmt: skip
    torch.testing.assert_close(whole, parts)
    assert [s.num_examples for s in shards] == [4, 3, 3]
    assert [s.num_examples for s in closure.shards(11)] == [1] * 10  # a short last batch


def test_shards_keep_the_closures_micro_batches():
    model, x, y = _problem(12)
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y, accumulation_steps=4)
    shards = closure.shards(2)
    assert [s.accumulation_steps for s in shards] == [2, 2]  # passes of 3, as the closure's
    assert [s.accumulation_steps for s in closure.shards(3)] == [2, 2, 2]  # ceil(4·4/12)


def _stale_candidate_losses_and_step(model, theta, generator, direction, x, y, t, s, radii, rhos):
    """One tsam-stale step by brute force: Gumbel variates first, then s noise draws; candidate
    j = θ + ξ_j + ρ_g d; the gradient at the one with the largest t·L_j + G_j."""
    u = torch.rand(s, generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u))
    candidates = []
    for _ in range(s):
        xi = _noise(generator, theta, radii)
        candidates.append([p + e + rho * d for p, e, rho, d in
                           zip(theta, xi, rhos, direction, strict=True)])  # fmt: skip
    losses = torch.stack([_loss(model, c, x, y).detach() for c in candidates])
    if t == float("inf"):
        top = losses == losses.max()
        chosen = int(torch.argmax(torch.where(top, gumbel, -torch.inf)))
    else:
        chosen = int(torch.argmax(t * losses + gumbel))
    _, g = _grad(model, candidates[chosen], x, y)
    return g, chosen


@pytest.mark.parametrize("t", [0.0, 2.0, float("inf")])
def test_stale_ascent_equals_the_formula(t):
    """Noise on, s = 3, two groups: candidates θ + ξ_j + ρ_g G_prev/‖G_prev‖ (no direction at
    the first step), one drawn by the Gumbel-max of t·L, the step at its gradient."""
    model, x, y = _problem()
    rhos = _per_group([g["rho"] for g in GROUPS], model)
    radii = _per_group([g["noise_radius"] for g in GROUPS], model)
    opt = TSAMResample(_groups(model), torch.optim.SGD, tilt=t, num_samples=3, ascent="stale",
                       lr=LR, seed=5)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    theta = [p.detach().clone() for p in model.parameters()]
    direction = [torch.zeros_like(p) for p in theta]
    chosen = []
    for _ in range(5):
        generator = _replay(opt)
        opt.step(closure)
        g, j = _stale_candidate_losses_and_step(model, theta, generator, direction, x, y, t, 3,
                                                radii, rhos)  # fmt: skip
        assert int(opt.last_step.selected) == j
        chosen.append(j)
        theta = [p - LR * gi for p, gi in zip(theta, g, strict=True)]
        direction = [gi / _norm(g) for gi in g]
    for p, r in zip(model.parameters(), theta, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert opt.closure_calls == 5 * 4 and opt.passes_per_step == 4
    if t == 0.0:
        assert len(set(chosen)) > 1  # the draw is random, not always the first candidate


def test_stale_direction_takes_this_steps_rho():
    """ρ set to 0 after a step: the next step's candidates have no direction (noise 0: θ)."""
    model, x, y = _problem()
    opt = TSAMResample(model.parameters(), torch.optim.SGD, num_samples=2, rho=RHO,
                       noise_radius=0.0, ascent="stale", lr=LR)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    opt.step(closure)
    opt.param_groups[0]["rho"] = 0.0
    theta = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    clean, g = _grad(model, theta, x, y)
    torch.testing.assert_close(opt.last_step.losses, clean.expand(2), rtol=1e-13, atol=1e-13)
    for p, r, gi in zip(model.parameters(), theta, g, strict=True):
        torch.testing.assert_close(p.detach(), r - LR * gi, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["tsam-stale", "tsam-intermittent"])
def test_a_layer_unfrozen_between_steps_gets_no_stale_state_and_theta_is_kept(name):
    """The kept direction / correction is per parameter: a layer unfrozen after two steps has
    none (zeros) and the others keep theirs; the step neither fails nor leaves θ moved."""
    model, x, y = _problem()
    model[0].requires_grad_(False)
    kw = {"every": 3} if name == "tsam-intermittent" else {}  # steps: full, corrected, corrected
    opt = create_optimizer(name, model.parameters(), base="sgd", lr=LR, rho=RHO,
                           noise_radius=0.0, seed=0, **kw)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    opt.step(closure)
    opt.step(closure)
    model[0].requires_grad_(True)
    theta = [p.detach().clone() for p in model.parameters()]
    state = opt.state_dict()["perturbation"]
    kept = {
        k: v.clone()
        for k, v in state["stale_direction" if name == "tsam-stale" else "correction"].items()
    }
    assert sorted(kept) == [2, 3]  # the second layer's weight and bias
    opt.step(closure)
    if name == "tsam-stale":  # noise 0: the gradient at θ + ρ (0, 0, d_2, d_3)
        d = [torch.zeros_like(theta[0]), torch.zeros_like(theta[1]), kept[2], kept[3]]
        _, g = _grad(model, [p + RHO * di for p, di in zip(theta, d, strict=True)], x, y)
        update = g
    else:  # a corrected step: g + α‖g‖ v/‖v‖ with v = 0 on the first layer
        _, g = _grad(model, theta, x, y)
        v = [torch.zeros_like(theta[0]), torch.zeros_like(theta[1]), kept[2], kept[3]]
        update = [gi + 0.7 * _norm(g) / _norm(v) * vi for gi, vi in zip(g, v, strict=True)]
    for p, r, u in zip(model.parameters(), theta, update, strict=True):
        torch.testing.assert_close(p.detach(), r - LR * u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["tsam-stale", "tsam-intermittent"])
def test_kept_state_loads_onto_the_parameters_dtype(name):
    model32, x, y = _problem()
    model32 = model32.float()
    kw = {"every": 3} if name == "tsam-intermittent" else {}
    opt = create_optimizer(name, model32.parameters(), base="sgd", lr=LR, seed=0, **kw)
    opt.step(make_closure(model32, torch.nn.functional.cross_entropy, x.float(), y))
    saved = copy.deepcopy(opt.state_dict())
    model64 = copy.deepcopy(model32).double()
    again = create_optimizer(name, model64.parameters(), base="sgd", lr=LR, seed=0, **kw)
    again.load_state_dict(saved)
    key = "stale_direction" if name == "tsam-stale" else "correction"
    kept = again.state_dict()["perturbation"][key]
    assert kept and all(v.dtype == torch.float64 for v in kept.values())
    again.step(make_closure(model64, torch.nn.functional.cross_entropy, x, y))


def test_kept_state_of_another_model_is_refused():
    model, x, y = _problem()
    opt = create_optimizer("tsam-stale", model.parameters(), base="sgd", lr=LR, seed=0)
    opt.step(make_closure(model, torch.nn.functional.cross_entropy, x, y))
    saved = copy.deepcopy(opt.state_dict())
    saved["perturbation"]["stale_direction"][0] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="stale_direction of parameter 0 has shape"):
        create_optimizer("tsam-stale", model.parameters(), base="sgd", lr=LR).load_state_dict(saved)


@pytest.mark.parametrize("t", [0.0, 2.0])
def test_intermittent_equals_the_formula(t):
    """s = 3, noise on, k = 3: full steps are TSAM steps (tilted over 3 noisy ascents) that keep
    v = G − <G,g0>/‖g0‖² g0; between them g + α‖g‖ v/‖v‖."""
    model, x, y = _problem()
    alpha, k, s, r = 0.7, 3, 3, 0.5
    opt = TSAMIntermittent(model.parameters(), torch.optim.SGD, every=k, alpha=alpha, tilt=t,
                           num_samples=s, rho=RHO, noise_radius=r, lr=LR, seed=2)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    theta = [p.detach().clone() for p in model.parameters()]
    radii, rhos = [r] * len(theta), [RHO] * len(theta)
    v = None
    for step in range(7):
        generator = _replay(opt)
        opt.step(closure)
        _, g0 = _grad(model, theta, x, y)
        if step % k == 0:
            losses, grads = [], []
            for _ in range(s):
                start = [p + e for p, e in zip(theta, _noise(generator, theta, radii), strict=True)]
                _, g = _grad(model, start, x, y)
                loss, gp = _grad(model, _ascend(start, g, rhos), x, y)
                losses.append(loss)
                grads.append(gp)
            w = _tilt_weights(torch.stack(losses), t, torch.ones(s))
            big = [sum(w[j] * grads[j][i] for j in range(s)) for i in range(len(theta))]
            coef = sum((a * b).sum() for a, b in zip(big, g0, strict=True)) / _norm(g0) ** 2
            v = [a - coef * b for a, b in zip(big, g0, strict=True)]
            update = big
        else:
            update = [gi + alpha * _norm(g0) / _norm(v) * vi for gi, vi in zip(g0, v, strict=True)]
        theta = [p - LR * u for p, u in zip(theta, update, strict=True)]
    for p, ref in zip(model.parameters(), theta, strict=True):
        torch.testing.assert_close(p.detach(), ref, rtol=1e-11, atol=1e-12)
    # 3 full steps of 1 + 2s passes, 4 corrected steps of 1
    assert opt.closure_calls == 3 * (1 + 2 * s) + 4


def _bn_dropout_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))  # fmt: skip


def test_intermittent_every_step_is_tsam_with_batchnorm_and_dropout():
    results = []
    for cls, kw in ((TSAMIntermittent, {"every": 1}), (TSAM, {})):
        model = _bn_dropout_model()
        x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
        opt = cls(model.parameters(), torch.optim.SGD, tilt=5.0, num_samples=2, seed=1, lr=LR,
                  model=model, **kw)  # fmt: skip
        closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
        torch.manual_seed(123)  # dropout masks
        for _ in range(3):
            opt.step(closure)
        results.append([t.detach().clone() for t in model.state_dict().values()])
        assert opt.closure_calls == 3 * 2 * 2 and opt.passes_per_step == 4
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_intermittent_updates_batchnorm_once_per_step():
    model = _bn_dropout_model()
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    opt = TSAMIntermittent(model.parameters(), torch.optim.SGD, every=3, num_samples=2, lr=LR,
                           model=model, seed=0)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    for _ in range(4):  # full, corrected, corrected, full
        opt.step(closure)
    assert int(model[1].num_batches_tracked) == 4


def test_intermittent_refuses_a_nonfinite_clean_pass_before_stepping():
    model, x, y = _problem()
    opt = TSAMIntermittent(model.parameters(), torch.optim.SGD, every=3, num_samples=2, lr=LR)
    calls = []

    def closure():
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss = loss * (math.inf if len(calls) == 1 else 1.0)  # the clean pass of the full step
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="clean pass at θ"):
        opt.step(closure)
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


def test_intermittent_keeps_its_correction_when_a_clean_pass_is_not_finite():
    model, x, y = _problem()
    opt = TSAMIntermittent(model.parameters(), torch.optim.SGD, every=2, num_samples=2, lr=LR,
                           nonfinite="skip", seed=0)  # fmt: skip
    good = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    opt.step(good)  # full: v
    opt.step(good)  # corrected
    kept = {k: v.clone() for k, v in opt.state_dict()["perturbation"]["correction"].items()}
    calls = []

    def bad_first_pass():
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(model(x), y) * (
            math.nan if len(calls) == 1 else 1.0
        )
        loss.backward()
        return loss

    opt.step(bad_first_pass)  # full step: clean pass NaN, the TSAM step itself is finite
    assert opt.last_step.took_step
    after = opt.state_dict()["perturbation"]["correction"]
    assert all(torch.equal(after[k], kept[k]) for k in kept)
    opt.step(good)  # corrected with the kept v: finite
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_intermittent_correction_is_summed_wide_in_float16():
    from tiltedsam.optim.tsam_intermittent import _orthogonal_part

    p = torch.nn.Parameter(torch.zeros(64, dtype=torch.float16))
    p.grad = torch.full((64,), 300.0, dtype=torch.float16)  # <G, g0> = 64·300² > fp16's max
    clean = [torch.full((64,), 200.0, dtype=torch.float16)]
    clean[0][0] = 100.0
    v = _orthogonal_part([p], clean)
    assert v[0].dtype == torch.float16 and torch.isfinite(v[0]).all()
    g, c = p.grad.double(), clean[0].double()
    expected = g - (g @ c) / (c @ c) * c
    torch.testing.assert_close(v[0].double(), expected, rtol=0, atol=0.5)


def test_extra_buffers_count_the_kept_state():
    model, x, y = _problem()
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    counts = {}
    for name in ("tsam", "tsam-stale", "tsam-intermittent"):
        opt = create_optimizer(name, model.parameters(), base="sgd", lr=0.0, seed=0, every=2) \
            if name == "tsam-intermittent" else create_optimizer(name, model.parameters(), base="sgd", lr=0.0, seed=0)  # fmt: skip
        opt.step(closure)
        counts[name] = opt.extra_buffers
    assert counts["tsam-stale"] == 4  # θ, the kept point, the next direction, the direction
    assert counts["tsam-intermittent"] == counts["tsam"] + 2  # g0 and v


@pytest.mark.parametrize("name", ["tsam-stale", "tsam-intermittent", "tsam-split"])
def test_resumed_runs_continue_bit_for_bit(name):
    """The stale direction and the intermittent correction live in the state_dict."""

    def run(steps, state=None, params=None):
        model, x, y = _problem()
        if params is not None:
            model.load_state_dict(params)
        opt = create_optimizer(name, model.parameters(), base="sgd", lr=LR, seed=0, every=2) \
            if name == "tsam-intermittent" else create_optimizer(name, model.parameters(), base="sgd", lr=LR, seed=0)  # fmt: skip
        if state is not None:
            opt.load_state_dict(state)
        closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
        for _ in range(steps):
            opt.step(closure)
        return model, opt

    straight, _ = run(5)
    first, opt = run(3)
    saved = copy.deepcopy(opt.state_dict())
    resumed, _ = run(2, state=saved, params=copy.deepcopy(first.state_dict()))
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_harness_runs_a_split_batch_method():
    from tiltedsam.data.mnist1d import ArrayDataset
    from tiltedsam.experiments import TrainConfig, train_run
    from tiltedsam.optim import parse_method

    torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(x_train=torch.randn(40, 1, 40, generator=g), y_train=torch.randint(0, 10, (40,), generator=g),
                        x_test=torch.randn(20, 1, 40, generator=g), y_test=torch.randint(0, 10, (20,), generator=g),
                        num_classes=10, name="tiny")  # fmt: skip
    result = train_run(parse_method("tsam-split:num_samples=2"), data,
                       TrainConfig(model="mlp", epochs=1, batch_size=20), 0, progress=False)  # fmt: skip
    assert result.steps == 2 and result.closure_calls == 2 * 2 * 2
    # 41 examples in batches of 20: the last batch of 1 is one shard, not three (two empty).
    data = dataclasses.replace(data, x_train=torch.cat([data.x_train, data.x_train[:1]]),
                               y_train=torch.cat([data.y_train, data.y_train[:1]]))  # fmt: skip
    result = train_run(parse_method("tsam-split:num_samples=3"), data,
                       TrainConfig(model="mlp", epochs=1, batch_size=20), 0, progress=False)  # fmt: skip
    assert result.steps == 3 and result.closure_calls == 2 * (3 + 3 + 1)
    assert math.isfinite(result.train_loss) and result.skipped_steps == 0
