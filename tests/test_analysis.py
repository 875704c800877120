"""Analysis: HVP vs dense Hessians, Lanczos vs eigvalsh, Hutchinson, flatness, cross-evaluation."""

import math

import pytest
import torch

from tiltedsam.analysis import (
    cross_evaluate,
    hessian_vector_product,
    hutchinson_trace,
    noise_flatness,
    top_eigenvalues,
)
from tiltedsam.analysis.glm import glm_flatness_vs_tilt, glm_loss

from .conftest import make_mlp, make_regression

CE = torch.nn.functional.cross_entropy


def dense_hessian(model, x, y, bn_mode="eval"):
    """The full Hessian of the mean loss by torch.func over the flattened parameters."""
    params = dict(model.named_parameters())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    model.train(bn_mode == "train")

    def loss_of(flat):
        chunks = torch.split(flat, sizes)
        p = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return CE(
            torch.func.functional_call(
                model, (p, {k: v.clone() for k, v in buffers.items()}), (x,)
            ),
            y,
        )

    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    return torch.func.hessian(loss_of)(flat)


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, [
        m.training for m in model.modules()
    ]


@pytest.mark.parametrize("batchnorm", [False, True])
def test_hvp_equals_dense_hessian_times_vector(float64, batchnorm):
    x, y = make_regression(n=24)
    model = make_mlp(batchnorm=batchnorm)
    model.train()
    if batchnorm:  # non-trivial running statistics
        with torch.no_grad():
            model(x * 2 + 1)
    before, modes = state_of(model)
    gen = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in model.parameters()]
    hv = hessian_vector_product(model, CE, [(x, y)], v, bn_mode="eval")
    after, modes_after = state_of(model)
    assert all(torch.equal(before[k], after[k]) for k in before) and modes == modes_after
    H = dense_hessian(model, x, y, "eval")
    model.train()
    torch.testing.assert_close(flat(hv), H @ flat(v), rtol=1e-10, atol=1e-12)
    if batchnorm:  # train mode uses batch statistics and must not move the running ones
        hv_train = hessian_vector_product(model, CE, [(x, y)], v, bn_mode="train")
        assert all(torch.equal(before[k], v2) for k, v2 in state_of(model)[0].items())
        # Reference: central differences of the float64 gradient in train mode (torch.func's
        # hessian through batch_norm's training path does not give the right answer here).
        h = 1e-5

        def grad_at(step):
            with torch.no_grad():
                for p, vi in zip(model.parameters(), v, strict=True):
                    p.add_(step * vi)
            model.train()
            g = torch.autograd.grad(CE(model(x), y), list(model.parameters()))
            with torch.no_grad():
                for p, vi in zip(model.parameters(), v, strict=True):
                    p.sub_(step * vi)
            return flat(g)

        fd = (grad_at(h) - grad_at(-h)) / (2 * h)
        torch.testing.assert_close(flat(hv_train), fd, rtol=1e-6, atol=1e-7)


def test_batch_splitting_does_not_change_the_result(float64):
    x, y = make_regression(n=30)
    model = make_mlp(batchnorm=True)
    v = [torch.ones_like(p) for p in model.parameters()]
    whole = hessian_vector_product(model, CE, [(x, y)], v)
    split = hessian_vector_product(
        model, CE, [(x[:7], y[:7]), (x[7:20], y[7:20]), (x[20:], y[20:])], v
    )
    torch.testing.assert_close(flat(split), flat(whole), rtol=1e-12, atol=1e-13)


def test_lanczos_top_eigenvalues_match_dense_eigvalsh(float64):
    x, y = make_regression(n=40)
    model = make_mlp()
    spectrum = top_eigenvalues(model, CE, [(x[:25], y[:25]), (x[25:], y[25:])], k=5, seed=3)
    dense = torch.linalg.eigvalsh(dense_hessian(model, x, y)).flip(0)[:5]
    assert spectrum.eigenvalues == pytest.approx(dense.tolist(), rel=1e-6, abs=1e-9)
    assert spectrum.num_examples == 40


def test_hutchinson_trace_is_within_its_standard_error(float64):
    x, y = make_regression(n=40)
    model = make_mlp()
    est = hutchinson_trace(model, CE, [(x, y)], num_probes=300, seed=1)
    exact = float(torch.trace(dense_hessian(model, x, y)))
    assert abs(est.trace - exact) < 4 * est.std_error
    assert est.std_error < 0.2 * abs(exact)


def test_noise_flatness_of_a_quadratic_matches_the_closed_form(float64):
    """MSE of a linear model: E[L(θ+ε)] = L(θ) + δ²·tr(H)/2 exactly, H = 2XᵀX/N (no bias)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(50, 1, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(4, 1, bias=False).double()
    mse = torch.nn.functional.mse_loss
    delta = 0.3
    report = noise_flatness(
        model, mse, [(x, target)], deltas=[0.0, delta], draws=4000, tilts=[2.0], seed=5
    )
    zero, scale = report.scales
    assert zero.mean == pytest.approx(report.clean_loss, rel=1e-12) and zero.variance < 1e-24
    trace = float(torch.trace(2 * x.T @ x / 50))
    expected = report.clean_loss + delta**2 * trace / 2
    se = math.sqrt(scale.variance / 4000)
    assert abs(scale.mean - expected) < 4 * se
    assert scale.tilted[2.0]["objective"] > scale.mean  # tilting weights the larger losses
    assert scale.tilted[2.0]["mean"] > scale.mean
    again = noise_flatness(model, mse, [(x, target)], deltas=[delta], draws=50, seed=5)
    first = noise_flatness(model, mse, [(x, target)], deltas=[delta], draws=50, seed=5)
    assert again.scales[0].mean == first.scales[0].mean


def test_cross_evaluation_orders_objectives_and_uses_common_noise(float64):
    x, y = make_regression(n=32)
    a, b = make_mlp(seed=0), make_mlp(seed=1)
    before, _ = state_of(a)
    table = cross_evaluate({"a": a, "a again": a, "b": b}, CE, [(x, y)], rho=0.5, tilts=[1.0, 100.0],
                           draws=100, seed=2)  # fmt: skip
    assert table["a"] == table["a again"]
    for row in table.values():
        assert row["SAM"] >= row["ERM"]
        assert row["TSAM t=100"] >= row["TSAM t=1"]
    assert all(torch.equal(before[k], v) for k, v in state_of(a)[0].items())


class WithUnusedHead(torch.nn.Module):
    """An MLP plus a trainable head the loss never uses (an auxiliary head left in)."""

    def __init__(self):
        super().__init__()
        self.body = make_mlp()
        self.aux = torch.nn.Linear(3, 2).double()

    def forward(self, x):
        return self.body(x)


def test_an_unused_parameter_has_zero_curvature_and_no_grad_mode_is_no_obstacle(float64):
    x, y = make_regression(n=30)
    model = WithUnusedHead()
    dense = torch.linalg.eigvalsh(dense_hessian(model.body, x, y)).flip(0)[:2]
    with torch.no_grad():  # as in an evaluation loop
        spectrum = top_eigenvalues(model, CE, [(x, y)], k=2, seed=0)
        table = cross_evaluate({"m": model}, CE, [(x, y)], rho=0.1, tilts=[1.0], draws=20)
        hv = hessian_vector_product(model, CE, [(x, y)],
                                    [torch.ones_like(p) for p in model.parameters()])  # fmt: skip
    assert spectrum.eigenvalues == pytest.approx(dense.tolist(), rel=1e-6, abs=1e-9)
    assert table["m"]["SAM"] >= table["m"]["ERM"]
    assert all(torch.count_nonzero(h) == 0 for h in hv[-2:]), "the unused head: H = 0"
    trace = hutchinson_trace(model, CE, [(x, y)], num_probes=10, seed=0)
    assert math.isfinite(trace.trace)


def test_glm_loss_matches_cross_entropy(float64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (20,), generator=gen)
    theta = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    design = torch.cat([x, torch.ones(20, 1, dtype=torch.float64)], 1)
    assert float(glm_loss(theta, design, y)) == pytest.approx(
        float(CE(design @ theta, y)), rel=1e-12
    )
    batch = torch.stack([theta, 2 * theta])
    assert float(glm_loss(batch, design, y)[1]) == pytest.approx(
        float(CE(design @ (2 * theta), y)), rel=1e-12
    )


def test_glm_minimisers_get_flatter_as_t_grows():
    """Theorem 1 on a small synthetic softmax regression (the MNIST-1D version is in docs/)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=gen)
    w = torch.randn(5, 3, generator=gen)
    y = (x @ w + 0.8 * torch.randn(300, 3, generator=gen)).argmax(1)
    points = glm_flatness_vs_tilt(x[:200], y[:200], x[200:], y[200:], tilts=[0.0, 2.0, 10.0],
                                  sigma=0.3, draws=128, eval_draws=500, max_iter=100)  # fmt: skip
    traces = [p.hessian_trace for p in points]
    assert traces[0] > traces[1] > traces[2]
    assert all(p.lbfgs_grad_norm < 1e-5 for p in points)


def test_analysis_leaves_the_global_rng_alone(float64):
    x, y = make_regression(n=20)
    model = make_mlp()
    state = torch.get_rng_state()
    noise_flatness(model, CE, [(x, y)], deltas=[0.1], draws=3, seed=0)
    hutchinson_trace(model, CE, [(x, y)], num_probes=2, seed=0)
    top_eigenvalues(model, CE, [(x, y)], k=2, seed=0)
    cross_evaluate({"m": model}, CE, [(x, y)], draws=3, seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_top5_needs_at_most_30_hvps_at_tol_1e4_on_a_small_cnn():
    from tiltedsam.models import CNN1D

    torch.manual_seed(0)
    model = CNN1D(channels=8)
    x, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))
    # A trained solution, as analysed in practice (at random init the top eigenvalues cluster
    # and Lanczos needs about 57 HVPs for the same tolerance).
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        CE(model(x), y).backward()
        opt.step()
    spectrum = top_eigenvalues(model, CE, [(x, y)], k=5, tol=1e-4)
    reference = top_eigenvalues(model, CE, [(x, y)], k=5, tol=1e-10)
    print(f"top-5 Lanczos at tol 1e-4: {spectrum.num_hvps} HVPs")
    assert spectrum.num_hvps <= 30
    assert spectrum.eigenvalues == pytest.approx(reference.eigenvalues, rel=1e-4)


def test_bn_mode_train_puts_only_the_norm_layers_in_train_mode(float64):
    """bn_mode="train" is about BatchNorm's batch statistics: dropout stays off, so the
    measurements are deterministic, the Hessian-vector product symmetric and noise-free flatness
    at δ = 0 has zero variance; the model's modes come back as they were."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(6, 3)).double()  # fmt: skip
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    batches, loss_fn = [(x, y)], torch.nn.functional.cross_entropy
    model.train()
    first = top_eigenvalues(model, loss_fn, batches, k=2, seed=0, bn_mode="train").eigenvalues
    again = top_eigenvalues(model, loss_fn, batches, k=2, seed=0, bn_mode="train").eigenvalues
    assert list(first) == list(again)
    g = torch.Generator().manual_seed(1)
    n = sum(p.numel() for p in model.parameters())
    u, v = (
        torch.randn(n, generator=g, dtype=torch.float64),
        torch.randn(n, generator=g, dtype=torch.float64),
    )
    hu = torch.cat(
        [
            h.reshape(-1)
            for h in hessian_vector_product(
                model, loss_fn, batches, _split(model, u), bn_mode="train"
            )
        ]
    )
    hv = torch.cat(
        [
            h.reshape(-1)
            for h in hessian_vector_product(
                model, loss_fn, batches, _split(model, v), bn_mode="train"
            )
        ]
    )
    assert torch.allclose(v @ hu, u @ hv, rtol=1e-10, atol=1e-12)
    flat = noise_flatness(
        model, loss_fn, batches, deltas=(0.0,), draws=5, tilts=(), bn_mode="train"
    )
    assert flat.scales[0].variance == 0 and flat.scales[0].mean == pytest.approx(flat.clean_loss)
    assert all(m.training for m in model.modules())


def _split(model, flat_vector):
    out, start = [], 0
    for p in model.parameters():
        out.append(flat_vector[start : start + p.numel()].view_as(p))
        start += p.numel()
    return out
