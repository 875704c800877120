"""Hugging Face Trainer and Lightning (manual optimization) drive the optimizers to the same
parameters as a plain training loop.  Skipped with the reason when the extra is missing."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tiltedsam import TSAM

from .conftest import make_regression


def make_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def plain_loop(steps, x, y, **kw):
    net = make_net()
    opt = TSAM(net.parameters(), torch.optim.SGD, **kw)
    for _ in range(steps):

        def closure():
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]), opt


OPTS = {"tilt": 5.0, "num_samples": 2, "lr": 0.1, "seed": 4}


def test_huggingface_trainer_with_tsam(tmp_path):
    pytest.importorskip("transformers", reason="the [text] extra (transformers) is not installed")
    pytest.importorskip("accelerate", reason="the [text] extra (accelerate) is not installed")
    from transformers import TrainingArguments

    from tiltedsam.integrations.huggingface import PerturbationTrainer

    x, y = make_regression(n=16, dtype=torch.float32)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_net()

        def forward(self, features, labels):
            return {"loss": F.cross_entropy(self.net(features), labels)}

    data = [{"features": x[i], "labels": y[i]} for i in range(len(x))]
    model = Wrapped()
    opt = TSAM(model.parameters(), torch.optim.SGD, **OPTS)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16,
                             max_steps=4, lr_scheduler_type="constant", max_grad_norm=1e9,
                             report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, dataloader_drop_last=False, seed=0)  # fmt: skip
    trainer = PerturbationTrainer(model=model, args=args, train_dataset=data,
                                  optimizers=(opt, None))  # fmt: skip
    trainer.train()
    expected, ref = plain_loop(4, x, y, **OPTS)
    got = torch.cat([p.detach().reshape(-1) for p in model.net.parameters()])
    assert opt.step_count == 4 and opt.closure_calls == ref.closure_calls == 4 * 4
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    args.gradient_accumulation_steps = 2
    with pytest.raises(ValueError, match="gradient_accumulation_steps=1"):
        trainer.training_step(model, data[0])


def _hf_setup(tmp_path, **arg_kw):
    from transformers import TrainingArguments

    x, y = make_regression(n=16, dtype=torch.float32)
    dtypes = []

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_net()

        def forward(self, features, labels):
            logits = self.net(features)
            dtypes.append(logits.dtype)
            return {"loss": F.cross_entropy(logits, labels)}

    data = [{"features": x[i], "labels": y[i]} for i in range(len(x))]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16,
                             max_steps=4, lr_scheduler_type="constant", max_grad_norm=1e9,
                             report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, dataloader_drop_last=False, seed=0, **arg_kw)  # fmt: skip
    return Wrapped(), data, args, dtypes, (x, y)


def test_huggingface_bf16_runs_every_pass_under_autocast(tmp_path):
    """What the docstring promises for bf16=True: each pass under bfloat16 autocast, float32
    weights, the parameters of a plain loop under torch.autocast."""
    pytest.importorskip("transformers", reason="the [text] extra (transformers) is not installed")
    pytest.importorskip("accelerate", reason="the [text] extra (accelerate) is not installed")
    from tiltedsam.integrations.huggingface import PerturbationTrainer

    model, data, args, dtypes, (x, y) = _hf_setup(tmp_path, bf16=True)
    opt = TSAM(model.parameters(), torch.optim.SGD, **OPTS)
    PerturbationTrainer(model=model, args=args, train_dataset=data,
                        optimizers=(opt, None)).train()  # fmt: skip
    assert dtypes == [torch.bfloat16] * 16  # 4 steps x 4 passes, all under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    net = make_net()
    ref = TSAM(net.parameters(), torch.optim.SGD, **OPTS)
    for _ in range(4):

        def closure():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x), y)
            loss.backward()
            return loss

        ref.step(closure)
    got = torch.cat([p.detach().reshape(-1) for p in model.net.parameters()])
    want = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("setting", [{"gradient_accumulation_steps": 2}, {"fp16": True}])
def test_huggingface_refuses_what_it_cannot_follow_at_construction(tmp_path, setting):
    pytest.importorskip("transformers", reason="the [text] extra (transformers) is not installed")
    pytest.importorskip("accelerate", reason="the [text] extra (accelerate) is not installed")
    from tiltedsam.integrations.huggingface import PerturbationTrainer

    model, data, args, _, _ = _hf_setup(tmp_path)
    for key, value in setting.items():
        setattr(args, key, value)
    opt = TSAM(model.parameters(), torch.optim.SGD, **OPTS)
    match = "gradient_accumulation_steps=1" if "gradient_accumulation_steps" in setting else "bf16"
    with pytest.raises(ValueError, match=match):
        PerturbationTrainer(model=model, args=args, train_dataset=data, optimizers=(opt, None))


def plain_two_phase(steps, x, y, **kw):
    """The plain loop through compute_gradient: the combined gradient of each step."""
    net = make_net()
    opt = TSAM(net.parameters(), torch.optim.SGD, **kw)
    grads = []
    for _ in range(steps):

        def closure():
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            return loss

        opt.compute_gradient(closure)
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]), grads


def _lightning_module(pl, manual_step, make_opt):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.net = make_net()

        def training_step(self, batch, batch_idx):
            bx, by = batch
            return manual_step(self, lambda: F.cross_entropy(self.net(bx), by))

        def configure_optimizers(self):
            return make_opt(self.parameters())

    return Module()


def _trainer(pl, callbacks=(), **kw):
    return pl.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=list(callbacks), **kw)  # fmt: skip


def test_lightning_manual_optimization_with_tsam():
    """Lightning drives TSAM to the plain loop's parameters; ``on_before_optimizer_step`` fires
    once per step (not once per pass) and sees the combined gradient; global_step counts steps."""
    pytest.importorskip("lightning", reason="the [lightning] extra is not installed")
    import lightning.pytorch as pl

    from tiltedsam.integrations.lightning import manual_step

    x, y = make_regression(n=16, dtype=torch.float32)
    seen = []

    class GradNorms(pl.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            seen.append(torch.cat([p.grad.reshape(-1) for p in module.parameters()]).clone())

    module = _lightning_module(
        pl, manual_step, lambda ps: TSAM(ps, torch.optim.SGD, **OPTS, max_grad_norm=0.05)
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = _trainer(pl, [GradNorms()])
    trainer.fit(module, loader)
    expected, grads = plain_two_phase(4, x, y, **OPTS, max_grad_norm=0.05)
    got = torch.cat([p.detach().reshape(-1) for p in module.net.parameters()])
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert trainer.global_step == 4 and len(seen) == 4  # once per step, not 4 x 4 passes
    for hook, combined in zip(seen, grads, strict=True):
        assert torch.allclose(hook, combined, rtol=1e-5, atol=1e-7)
        assert combined.norm() <= 0.05 * (1 + 1e-5), "max_grad_norm clipped it"

    auto = _lightning_module(pl, manual_step, lambda ps: TSAM(ps, torch.optim.SGD, **OPTS))
    auto.automatic_optimization = True
    with pytest.raises(RuntimeError, match="automatic_optimization = False"):
        manual_step(auto, lambda: torch.zeros(()))


def test_lightning_refuses_gradient_clip_val_in_manual_optimization():
    """What the how-to tells users: Lightning itself refuses ``gradient_clip_val`` with manual
    optimization; ``max_grad_norm=`` on the optimizer is the replacement (tested above)."""
    pytest.importorskip("lightning", reason="the [lightning] extra is not installed")
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from tiltedsam.integrations.lightning import manual_step

    x, y = make_regression(n=16, dtype=torch.float32)
    module = _lightning_module(pl, manual_step, lambda ps: TSAM(ps, torch.optim.SGD, **OPTS))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    with pytest.raises(MisconfigurationException, match="gradient clipping is not supported"):
        _trainer(pl, gradient_clip_val=1.0).fit(module, loader)


def test_lightning_manual_step_scores_tsam_resample_forward_only():
    pytest.importorskip("lightning", reason="the [lightning] extra is not installed")
    import lightning.pytorch as pl

    from tiltedsam import TSAMResample
    from tiltedsam.integrations.lightning import manual_step

    x, y = make_regression(n=16, dtype=torch.float32)
    module = _lightning_module(
        pl, manual_step,
        lambda ps: TSAMResample(ps, torch.optim.SGD, num_samples=4, lr=0.1, seed=0),
    )  # fmt: skip
    backwards = []
    module.net[0].weight.register_post_accumulate_grad_hook(lambda p: backwards.append(1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    _trainer(pl).fit(module, loader)
    assert len(backwards) == 4 * 2  # 4 forward-only scores and 2 backward passes per step


def test_step_with_a_closure_after_compute_gradient_applies_the_prepared_gradient():
    """What trainers rely on: the closure is called once, without gradients, for its value."""
    x, y = make_regression(n=16, dtype=torch.float32)
    a, b = make_net(), make_net()
    opt_a = TSAM(a.parameters(), torch.optim.SGD, **OPTS)
    opt_b = TSAM(b.parameters(), torch.optim.SGD, **OPTS)
    calls = []

    def closure_for(net):
        def closure():
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            return loss

        return closure

    for _ in range(3):
        opt_a.step(closure_for(a))
        value = opt_b.compute_gradient(closure_for(b))
        assert opt_b.step(lambda value=value: calls.append(1) or value) is value
    assert len(calls) == 3 and opt_b.closure_calls == opt_a.closure_calls
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    opt_b.compute_gradient(closure_for(b))
    with pytest.raises(RuntimeError, match="closure that does not call backward"):
        opt_b.step(closure_for(b))
