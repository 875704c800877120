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


def test_lightning_manual_optimization_with_tsam():
    pytest.importorskip("lightning", reason="the [lightning] extra is not installed")
    import lightning.pytorch as pl

    from tiltedsam.integrations.lightning import manual_step

    x, y = make_regression(n=16, dtype=torch.float32)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.net = make_net()

        def training_step(self, batch, batch_idx):
            bx, by = batch
            return manual_step(self, lambda: F.cross_entropy(self.net(bx), by))

        def configure_optimizers(self):
            return TSAM(self.parameters(), torch.optim.SGD, **OPTS)

    module = Module()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(module, loader)
    expected, _ = plain_loop(4, x, y, **OPTS)
    got = torch.cat([p.detach().reshape(-1) for p in module.net.parameters()])
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)

    auto = Module()
    auto.automatic_optimization = True
    with pytest.raises(RuntimeError, match="automatic_optimization = False"):
        manual_step(auto, lambda: torch.zeros(()))
