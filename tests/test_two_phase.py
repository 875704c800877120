"""Issue #19: davda54/sam's two-phase API (``first_step`` / ``second_step``) on SAM and ASAM is
the same update as ``step(closure)``, bit for bit, with the same end-of-step policies."""

import pytest
import torch
from torch.nn import functional as F

from tiltedsam.optim import create_optimizer

from .conftest import make_mlp, make_regression


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def buffers(model):
    return [b.clone() for b in model.buffers()]


@pytest.mark.parametrize("name", ["sam", "asam"])
@pytest.mark.parametrize("with_loss", [True, False])
def test_first_and_second_step_equal_step_with_a_closure(name, with_loss):
    x, y = make_regression(n=24)
    a, b = make_mlp(batchnorm=True), make_mlp(batchnorm=True)
    kw = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
    opt_a = create_optimizer(name, a.parameters(), model=a, **kw)
    opt_b = create_optimizer(name, b.parameters(), model=b, **kw)

    def closure():
        loss = F.cross_entropy(a(x), y)
        loss.backward()
        return loss

    for _ in range(4):
        returned = opt_a.step(closure)
        # davda54/sam's loop, unchanged but for the optional loss=
        loss = F.cross_entropy(b(x), y)
        loss.backward()
        opt_b.first_step(zero_grad=True, **({"loss": loss} if with_loss else {}))
        assert all(p.grad is None for p in b.parameters())
        second = F.cross_entropy(b(x), y)
        second.backward()
        opt_b.second_step(zero_grad=True, **({"loss": second} if with_loss else {}))
        assert all(p.grad is None for p in b.parameters())
        assert torch.equal(flat(a), flat(b))
        assert all(torch.equal(u, v) for u, v in zip(buffers(a), buffers(b), strict=True))
        assert opt_b.last_step.took_step
        if with_loss:
            assert torch.equal(opt_b.last_step.objective, returned)
            assert torch.equal(opt_b.last_step.losses, opt_a.last_step.losses)
        else:
            assert opt_b.last_step.losses.numel() == 0
    assert opt_a.closure_calls == opt_b.closure_calls == 8
    assert opt_a.step_count == opt_b.step_count == 4


def test_two_phase_steps_with_a_grad_scaler_equal_step_with_a_closure():
    x, y = make_regression(n=16, dtype=torch.float32)
    a, b = make_mlp(dtype=torch.float32), make_mlp(dtype=torch.float32)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2) for _ in "ab"]
    opt_a = create_optimizer("sam", a.parameters(), lr=0.1, grad_scaler=scalers[0])
    opt_b = create_optimizer("sam", b.parameters(), lr=0.1, grad_scaler=scalers[1])

    def closure():
        loss = F.cross_entropy(a(x), y)
        scalers[0].scale(loss).backward()
        return loss

    for _ in range(4):
        opt_a.step(closure)
        scalers[1].scale(F.cross_entropy(b(x), y)).backward()
        opt_b.first_step()
        scalers[1].scale(F.cross_entropy(b(x), y)).backward()
        opt_b.second_step(zero_grad=True)
    assert torch.equal(flat(a), flat(b))
    assert scalers[0].get_scale() == scalers[1].get_scale() == 2.0**12


def test_the_phases_must_alternate():
    x, y = make_regression()
    model = make_mlp()
    opt = create_optimizer("sam", model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match=r"second_step\(\) needs first_step\(\) first"):
        opt.second_step()
    F.cross_entropy(model(x), y).backward()
    theta = flat(model).clone()
    opt.first_step()
    assert not torch.equal(flat(model), theta), "first_step moved to θ + ε"
    with pytest.raises(RuntimeError, match=r"first_step\(\) after first_step\(\)"):
        opt.first_step()
    with pytest.raises(RuntimeError, match=r"step\(closure\) after first_step\(\)"):
        opt.step(lambda: F.cross_entropy(model(x), y))
    with pytest.raises(RuntimeError, match="no gradient for any parameter"):
        opt.second_step()  # no backward at θ + ε: θ is restored, nothing stepped
    assert torch.equal(flat(model), theta) and opt.step_count == 0
