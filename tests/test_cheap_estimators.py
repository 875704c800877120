"""The estimators of issue #21 against brute-force implementations of their formulas (float64,
noise radius 0 so every step is deterministic), their limits, resumption and the harness."""

from __future__ import annotations

import copy

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


@pytest.mark.parametrize("tilt_on", ["loss", "rise"])
@pytest.mark.parametrize("t", [0.0, 2.0, float("inf")])
def test_split_batch_equals_the_formula(t, tilt_on):
    model, x, y = _problem()
    reference = [p.detach().clone() for p in model.parameters()]
    opt = TSAMSplit(model.parameters(), torch.optim.SGD, tilt=t, num_samples=3, rho=RHO,
                    noise_radius=0.0, tilt_on=tilt_on, lr=LR)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    for _ in range(3):
        opt.step(closure)
        keys, grads = [], []
        for xs, ys in zip(torch.tensor_split(x, 3), torch.tensor_split(y, 3), strict=True):
            start, g = _grad(model, reference, xs, ys)  # ξ = 0
            scale = RHO / _norm(g)
            perturbed = [p + scale * gi for p, gi in zip(reference, g, strict=True)]
            loss, gp = _grad(model, perturbed, xs, ys)
            keys.append(loss - start if tilt_on == "rise" else loss)
            grads.append(gp)
        keys = torch.stack(keys)
        if t == float("inf"):
            w = (keys == keys.max()).double()
            w = w / w.sum()
        else:
            w = torch.softmax(t * keys, 0)
        combined = [sum(w[j] * grads[j][i] for j in range(3)) for i in range(len(reference))]
        reference = [p - LR * g for p, g in zip(reference, combined, strict=True)]
    for p, r in zip(model.parameters(), reference, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert opt.closure_calls == 3 * 2 * 3


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

    with pytest.raises(TypeError, match="make_closure"):
        opt.step(closure)
    with pytest.raises(ValueError, match="3 shard closures, got a sequence of 2"):
        opt.step([closure, closure])


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
    with pytest.raises(ValueError, match="cannot cut a batch of 10"):
        closure.shards(11)


def test_stale_ascent_equals_the_formula():
    """Noise 0: step 1 has no direction yet (the gradient at θ); then each step takes the
    gradient at θ + ρ G_prev/‖G_prev‖ (every candidate is that one point)."""
    model, x, y = _problem()
    opt = TSAMResample(model.parameters(), torch.optim.SGD, tilt=1.0, num_samples=2, rho=RHO,
                       noise_radius=0.0, ascent="stale", lr=LR)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    theta = [p.detach().clone() for p in model.parameters()]
    direction = [torch.zeros_like(p) for p in theta]
    for _ in range(4):
        opt.step(closure)
        _, g = _grad(model, [p + d for p, d in zip(theta, direction, strict=True)], x, y)
        theta = [p - LR * gi for p, gi in zip(theta, g, strict=True)]
        direction = [RHO * gi / _norm(g) for gi in g]
    for p, r in zip(model.parameters(), theta, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert opt.closure_calls == 4 * 3 and opt.passes_per_step == 3


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_intermittent_equals_the_formula(alpha):
    """s = 1, noise 0: full steps are SAM steps; between them g + α‖g‖ v/‖v‖."""
    model, x, y = _problem()
    opt = TSAMIntermittent(model.parameters(), torch.optim.SGD, every=3, alpha=alpha, num_samples=1,
                           rho=RHO, noise_radius=0.0, lr=LR)  # fmt: skip
    closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
    theta = [p.detach().clone() for p in model.parameters()]
    v = None
    for step in range(7):
        opt.step(closure)
        _, g = _grad(model, theta, x, y)
        if step % 3 == 0:
            tilted_point = [p + RHO * gi / _norm(g) for p, gi in zip(theta, g, strict=True)]
            _, big = _grad(model, tilted_point, x, y)
            coef = sum((a * b).sum() for a, b in zip(big, g, strict=True)) / _norm(g) ** 2
            v = [a - coef * b for a, b in zip(big, g, strict=True)]
            update = big
        else:
            update = [gi + alpha * _norm(g) / _norm(v) * vi for gi, vi in zip(g, v, strict=True)]
        theta = [p - LR * u for p, u in zip(theta, update, strict=True)]
    for p, r in zip(model.parameters(), theta, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-11, atol=1e-12)
    # 3 full steps of 1 + 2 passes, 4 corrected steps of 1
    assert opt.closure_calls == 3 * 3 + 4


def test_intermittent_every_step_is_tsam():
    results = []
    for cls, kw in ((TSAMIntermittent, {"every": 1}), (TSAM, {})):
        model, x, y = _problem()
        opt = cls(model.parameters(), torch.optim.SGD, tilt=5.0, num_samples=2, seed=1, lr=LR, **kw)
        closure = make_closure(model, torch.nn.functional.cross_entropy, x, y)
        for _ in range(3):
            opt.step(closure)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


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
