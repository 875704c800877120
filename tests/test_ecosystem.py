"""Mixed precision, gradient accumulation, two-phase steps, clipping, weight decay, checkpoints
and torch.compile: through the shared machinery, for every optimizer in the registry."""

import io
import shutil

import pytest
import torch
from torch.nn import functional as F

from tiltedsam import TSAM, make_closure
from tiltedsam.optim import METHODS as TABLE
from tiltedsam.optim import create_optimizer

from .conftest import Shardable, closure_for, make_mlp, make_regression
from .test_contract import ACTIVE

METHODS = sorted(TABLE)


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def make(name, model, **kw):
    seed = {"seed": 3} if TABLE[name].seeded else {}
    return create_optimizer(name, model.parameters(), base="sgd", lr=0.1, momentum=0.9,
                            **seed, **{**ACTIVE[name][0], **kw})  # fmt: skip


@pytest.mark.parametrize("name", METHODS)
def test_accumulated_micro_batches_equal_one_big_batch(name, float64):
    """k micro-batches (uneven sizes) give the big-batch update to 1e-6 in float64."""
    x, y = make_regression(n=30)
    big, micro = make_mlp(), make_mlp()
    opt_big, opt_micro = make(name, big), make(name, micro)
    for _ in range(3):
        opt_big.step(make_closure(big, F.cross_entropy, x, y))
        opt_micro.step(make_closure(micro, F.cross_entropy, x, y, accumulation_steps=4))
    assert torch.allclose(flat(big), flat(micro), rtol=0, atol=1e-6)
    assert not torch.equal(flat(big), flat(make_mlp())), "the steps moved the parameters"


def test_make_closure_checks_its_arguments():
    model = make_mlp(dtype=torch.float32)
    x, y = make_regression(n=4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"accumulation_steps must be in \[1, 4\]"):
        make_closure(model, F.cross_entropy, x, y, accumulation_steps=5)
    with pytest.raises(ValueError, match="accumulation_steps must be"):
        make_closure(model, F.cross_entropy, x, y, accumulation_steps=0)
    with pytest.raises(ValueError, match="parameters are on meta but inputs/targets are on cpu"):
        make_closure(make_mlp(dtype=torch.float32).to("meta"), F.cross_entropy, x, y)


def test_bfloat16_autocast_trains_close_to_float32():
    x, y = make_regression(n=64, dtype=torch.float32)
    runs = {}
    for dtype in (None, torch.bfloat16):
        model = make_mlp(dtype=torch.float32)
        opt = TSAM(model.parameters(), torch.optim.SGD, tilt=5, num_samples=3, lr=0.2, seed=1)
        losses = [float(opt.step(make_closure(model, F.cross_entropy, x, y, autocast_dtype=dtype)))
                  for _ in range(30)]  # fmt: skip
        runs[dtype] = (losses, flat(model))
        assert all(p.dtype == torch.float32 for p in model.parameters())
    (fp32_losses, fp32), (bf16_losses, bf16) = runs[None], runs[torch.bfloat16]
    assert bf16_losses[-1] < bf16_losses[0] - 0.03, "bf16 training decreases the loss"
    assert abs(bf16_losses[-1] - fp32_losses[-1]) < 0.02, "and tracks the float32 run"
    assert not torch.equal(fp32, bf16), "autocast changed the computation"
    assert (fp32 - bf16).norm() < 0.05 * fp32.norm()


def _scaled_closure(model, x, y, scaler, inject_inf=None):
    calls = [0]

    def build(x, y):
        def closure():
            loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            calls[0] += 1
            if inject_inf is not None and calls[0] == inject_inf:
                next(model.parameters()).grad[0, 0] = float("inf")
            return loss

        return closure

    return Shardable(build, x, y)


@pytest.mark.parametrize("name", METHODS)
def test_grad_scaler_steps_equal_unscaled_steps(name):
    """Loss scaling by powers of two is exact: scaled and unscaled runs agree, the scale grows
    once per step (growth_interval steps), never once per pass."""
    x, y = make_regression(n=16, dtype=torch.float32)
    plain, scaled = make_mlp(dtype=torch.float32), make_mlp(dtype=torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    opt_plain = make(name, plain)
    opt_scaled = make(name, scaled, grad_scaler=scaler)
    for _ in range(4):
        opt_plain.step(closure_for(plain, x, y))
        opt_scaled.step(_scaled_closure(scaled, x, y, scaler))
    assert torch.allclose(flat(plain), flat(scaled), rtol=1e-6, atol=1e-7)
    assert scaler.get_scale() == 2.0**12  # 4 steps, growth every 2 steps


@pytest.mark.parametrize("name", ["tsam", "sam", "esam2", "rsam"])
@pytest.mark.parametrize("pass_index", [1, 2])
def test_an_inf_in_any_pass_skips_the_step_like_grad_scaler(name, pass_index):
    x, y = make_regression(n=16, dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, backoff_factor=0.5)
    opt = make(name, model, grad_scaler=scaler)
    before = flat(model).clone()
    opt.step(_scaled_closure(model, x, y, scaler, inject_inf=pass_index))
    assert torch.equal(flat(model), before), "a step with an inf is skipped, θ restored"
    assert opt.skipped_steps == 1 and scaler.get_scale() == 2.0**9
    assert all(torch.isfinite(p).all() for p in model.parameters())
    opt.step(_scaled_closure(model, x, y, scaler))
    assert not torch.equal(flat(model), before) and opt.skipped_steps == 1


def test_grad_scaler_misuse_is_reported():
    model = make_mlp(dtype=torch.float32)
    with pytest.raises(TypeError, match=r"grad_scaler must be a torch\.amp\.GradScaler"):
        TSAM(model.parameters(), torch.optim.SGD, lr=0.1, grad_scaler=object())
    scaler = torch.amp.GradScaler("cpu")
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1, grad_scaler=scaler)
    x, y = make_regression(n=8, dtype=torch.float32)
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    with pytest.raises(TypeError, match=r"instead of scaler.step\(opt\)"):
        scaler.step(opt)
    never_scaled = TSAM(model.parameters(), torch.optim.SGD, lr=0.1,
                        grad_scaler=torch.amp.GradScaler("cpu"))  # fmt: skip
    with pytest.raises(RuntimeError, match=r"scaler.scale\(loss\).backward\(\)"):
        never_scaled.step(closure_for(model, x, y))


@pytest.mark.parametrize("name", METHODS)
def test_two_phase_step_equals_step_with_closure(name, float64):
    """compute_gradient(closure) then step() is the same update as step(closure)."""
    x, y = make_regression()
    a, b = make_mlp(), make_mlp()
    opt_a, opt_b = make(name, a), make(name, b)
    for _ in range(3):
        opt_a.step(closure_for(a, x, y))
        before = flat(b).clone()
        opt_b.compute_gradient(closure_for(b, x, y))
        assert torch.equal(flat(b), before), "compute_gradient leaves θ unchanged"
        opt_b.step()
    assert torch.equal(flat(a), flat(b))
    with pytest.raises(TypeError, match="requires a closure"):
        opt_b.step()


@pytest.mark.parametrize("name", METHODS)
def test_max_grad_norm_clips_the_combined_gradient(name, float64):
    x, y = make_regression()
    a, b = make_mlp(), make_mlp()
    opt_a, opt_b = make(name, a), make(name, b, max_grad_norm=0.05)
    opt_a.compute_gradient(closure_for(a, x, y))
    combined = [p.grad.clone() for p in a.parameters()]
    norm = torch.nn.utils.clip_grad_norm_(list(a.parameters()), 0.05)
    assert norm > 0.05, "the test clips for real"
    opt_a.step()
    opt_b.step(closure_for(b, x, y))
    assert torch.allclose(flat(a), flat(b), rtol=0, atol=1e-12)
    assert not torch.allclose(torch.cat([g.reshape(-1) for g in combined]),
                              torch.cat([p.grad.reshape(-1) for p in a.parameters()]))  # fmt: skip
    with pytest.raises(ValueError, match=r"max_grad_norm must be in \(0, inf\)"):
        make(name, a, max_grad_norm=0)


@pytest.mark.parametrize("name", METHODS)
def test_weight_decay_is_applied_once_per_step_not_per_pass(name, float64):
    model = make_mlp()
    opt = create_optimizer(name, model.parameters(), base="sgd", lr=0.1, weight_decay=0.01,
                           **ACTIVE[name][0])  # fmt: skip
    theta = flat(model).clone()

    def flat_loss():  # zero gradient everywhere: only weight decay moves θ
        loss = sum((p * 0).sum() for p in model.parameters())
        loss.backward()
        return loss

    x, y = make_regression()
    opt.step(Shardable(lambda xs, ys: flat_loss, x, y))
    assert torch.allclose(flat(model), theta * (1 - 0.1 * 0.01), rtol=0, atol=1e-15)


def test_resume_mid_run_is_bit_identical_with_schedule_sampler_and_scaler():
    """Interrupted at step k, saved with torch.save, resumed in a fresh process state: equal to
    the uninterrupted run bit for bit (tilt schedule position, HMC RNG, scaler state)."""
    x, y = make_regression(n=16, dtype=torch.float32)

    def build():
        model = make_mlp(dtype=torch.float32)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=3)
        opt = TSAM(model.parameters(), torch.optim.SGD, tilt=10, num_samples=3, sampler="hmc",
                   tilt_schedule="warmup", total_steps=8, lr=0.1, momentum=0.9, seed=5,
                   grad_scaler=scaler, model=model)  # fmt: skip
        return model, opt, scaler

    model, opt, scaler = build()
    for _ in range(8):
        opt.step(_scaled_closure(model, x, y, scaler))
    uninterrupted = flat(model)

    model, opt, scaler = build()
    for _ in range(3):
        opt.step(_scaled_closure(model, x, y, scaler))
    blob = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "scaler": scaler.state_dict()}, blob)  # fmt: skip
    torch.manual_seed(123)  # the global RNG plays no part
    model, opt, scaler = build()
    blob.seek(0)
    state = torch.load(blob, weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    scaler.load_state_dict(state["scaler"])
    assert opt.tilt == pytest.approx(10 * 3 / 8) and opt.step_count == 3
    for _ in range(5):
        opt.step(_scaled_closure(model, x, y, scaler))
    assert torch.equal(flat(model), uninterrupted)


def _have_compiler() -> str | None:
    if not shutil.which("cc") and not shutil.which("gcc") and not shutil.which("g++"):
        return "no C/C++ compiler on PATH (torch.compile's inductor CPU backend needs one)"
    try:
        import torch._inductor  # noqa: F401
    except Exception as error:  # pragma: no cover - platform specific
        return f"torch._inductor unavailable: {error}"
    return None


def test_torch_compile_model_trains_with_tsam():
    reason = _have_compiler()
    if reason:
        print(f"SKIP reason: {reason}")
        pytest.skip(reason)
    torch.compiler.reset()
    x, y = make_regression(n=32, dtype=torch.float32)
    eager, to_compile = make_mlp(dtype=torch.float32), make_mlp(dtype=torch.float32)
    compiled = torch.compile(to_compile)
    opts = [TSAM(m.parameters(), torch.optim.SGD, tilt=5, num_samples=2, lr=0.1, seed=0)
            for m in (eager, to_compile)]  # fmt: skip
    for _ in range(4):
        opts[0].step(closure_for(eager, x, y))
        opts[1].step(closure_for(compiled, x, y))
    assert torch.allclose(flat(eager), flat(to_compile), rtol=1e-5, atol=1e-6)
    assert not torch.equal(flat(to_compile), flat(make_mlp(dtype=torch.float32)))


def test_float16_autocast_with_grad_scaler_tracks_float32():
    """The CUDA recipe (float16 autocast + GradScaler), run on CPU."""
    x, y = make_regression(n=64, dtype=torch.float32)
    finals = {}
    for half in (False, True):
        model = make_mlp(dtype=torch.float32)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=half)
        opt = TSAM(model.parameters(), torch.optim.SGD, tilt=5, num_samples=3, lr=0.2, seed=1,
                   grad_scaler=scaler)  # fmt: skip
        for _ in range(20):
            opt.step(make_closure(model, F.cross_entropy, x, y, grad_scaler=scaler,
                                  autocast_dtype=torch.float16 if half else None))  # fmt: skip
        finals[half] = flat(model)
        assert opt.skipped_steps == 0
    assert not torch.equal(finals[False], finals[True])
    assert (finals[False] - finals[True]).norm() < 0.02 * finals[False].norm()


@pytest.mark.parametrize("name", METHODS)
def test_step_hooks_fire_once_per_step_after_the_parameters_moved(name, float64):
    """torch's step hooks (an EMA of the weights kept in a post-hook, say) see one step per
    step: with compute_gradient() then step(), and for a subclass that runs its parent's step
    (tsam-intermittent) while an instance of the parent exists in the same process."""
    x, y = make_regression()
    make(name, make_mlp())  # an instance of every class: torch has wrapped their step
    make("tsam", make_mlp())
    model = make_mlp()
    opt = make(name, model)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", flat(model).clone())))
    opt.register_step_post_hook(lambda o, a, k: seen.append(("post", flat(model).clone())))
    before = flat(model).clone()
    opt.step(closure_for(model, x, y))
    opt.compute_gradient(closure_for(model, x, y))
    opt.step()
    assert [kind for kind, _ in seen] == ["pre", "post", "pre", "post"]
    assert torch.equal(seen[0][1], before) and not torch.equal(seen[1][1], before)
    assert not torch.equal(seen[3][1], seen[1][1])
