"""One training run: a model, a method and a seed on an in-memory data set."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tiltedsam.data.cifar import random_crop_flip
from tiltedsam.data.mnist1d import ArrayDataset
from tiltedsam.experiments.methods import SEEDED, MethodSpec
from tiltedsam.models import create_model
from tiltedsam.optim import PerturbationOptimizer, create_optimizer


@dataclass(frozen=True)
class TrainConfig:
    """Training settings shared by every method in a comparison."""

    model: str = "cnn1d"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be in (0, inf), got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}"
            )


@dataclass
class RunResult:
    """What a run measured.  ``wall_time`` counts training steps only, not evaluation;
    ``cpu_time`` is the process CPU time of the same steps (robust to a shared machine)."""

    method: str
    seed: int
    test_accuracy: float
    test_loss: float
    train_loss: float
    train_accuracy: float
    wall_time: float
    steps: int
    closure_calls: int
    history: list[dict[str, float]] = field(default_factory=list)
    val_accuracy: float | None = None
    cpu_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """(mean cross-entropy, accuracy) of ``model`` in eval mode; the mode is restored after."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total_loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


def _save_atomic(payload: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def train_run(
    method: MethodSpec,
    data: ArrayDataset,
    config: TrainConfig,
    seed: int,
    *,
    progress: bool = True,
    position: int = 0,
    save_model: Path | None = None,
    checkpoint: Path | None = None,
    stop_after_epochs: int | None = None,
    metrics: Path | None = None,
) -> RunResult:
    """Train ``config.model`` on ``data`` with ``method`` from seed ``seed``; evaluate each epoch.

    With ``checkpoint``, the whole state (model, optimizer incl. base state and perturbation RNG,
    LR scheduler, data-order and augmentation generators, torch's global RNG, history, wall time)
    is written there atomically after every epoch, and a run that finds it resumes after the last
    finished epoch: an interrupted and resumed run ends with the same parameters and metrics as an
    uninterrupted one (on CPU).  ``stop_after_epochs`` ends the call early (to test resumption).
    With ``metrics``, the per-epoch records are (re)written there as JSON lines after every epoch.
    With ``save_model``, the final ``model.state_dict()`` is written there (atomically).
    """
    torch.manual_seed(seed)
    model = create_model(config.model, data.x_train.shape[1:], data.num_classes)
    kwargs = method.kwargs()
    # A method may carry its own learning rate (``sam:lr=0.05``), so a sweep can tune lr per
    # method with the same grid budget; otherwise the shared ``config.lr`` applies.
    lr = kwargs.pop("lr", config.lr)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"method option lr must be a number in (0, inf), got {lr!r}")
    epochs = config.epochs
    if method.name == "esam1":
        budget = kwargs.pop("budget")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"esam1 budget must be an int >= 1, got {budget!r}")
        epochs *= budget
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    total_steps = steps_per_epoch * epochs
    if method.name in SEEDED:
        kwargs.setdefault("seed", seed)
    if method.name in ("tsam", "tsam-naive", "tsam-resample"):
        if kwargs.get("tilt_schedule", "constant") != "constant":
            kwargs.setdefault("total_steps", total_steps)
    if method.name != "erm":
        kwargs.setdefault("model", model)
    optimizer = create_optimizer(
        method.name,
        model.parameters(),
        base="sgd",
        lr=float(lr),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        **kwargs,
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        if config.lr_schedule == "cosine"
        else None
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    order = torch.Generator().manual_seed(seed)
    augment_gen = torch.Generator().manual_seed(seed + 1)
    history: list[dict[str, float]] = []
    wall = cpu = 0.0
    start_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        order.set_state(state["order_rng"])
        augment_gen.set_state(state["augment_rng"])
        torch.set_rng_state(state["torch_rng"])
        history, wall, start_epoch = state["history"], state["wall_time"], state["epoch"]
        cpu = history[-1].get("cpu_time", 0.0) if history else 0.0
    bar = tqdm(
        total=total_steps,
        initial=start_epoch * steps_per_epoch,
        desc=f"{method.label} seed {seed}",
        position=position,
        leave=False,
        disable=not progress,
        dynamic_ncols=True,
    )
    for epoch in range(start_epoch, epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            bar.close()
            raise InterruptedError(f"stopped after {epoch} epochs (stop_after_epochs)")
        model.train()
        perm = torch.randperm(len(data.x_train), generator=order)
        step_losses = torch.zeros(())
        start, cpu_start = time.perf_counter(), time.process_time()
        for first in range(0, len(perm), config.batch_size):
            idx = perm[first : first + config.batch_size]
            inputs, targets = data.x_train[idx], data.y_train[idx]
            if data.augment == "crop_flip":
                inputs = random_crop_flip(inputs, augment_gen, data.pad_value)

            def closure(inputs=inputs, targets=targets, backward=True):
                loss = loss_fn(model(inputs), targets)
                if backward:  # tsam-resample scores perturbations with backward=False
                    loss.backward()
                return loss

            optimizer.zero_grad(set_to_none=True)
            step_losses = step_losses + optimizer.step(closure).detach()
            if scheduler is not None:
                scheduler.step()
            bar.update(1)
        wall += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        record = {
            "epoch": epoch + 1,
            "step_loss": float(step_losses) / steps_per_epoch,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "wall_time": wall,
            "cpu_time": cpu,
        }
        if data.x_val is not None:
            record["val_loss"], record["val_accuracy"] = evaluate(model, data.x_val, data.y_val)
        history.append(record)
        bar.set_postfix(loss=f"{record['step_loss']:.3f}", test_acc=f"{test_acc:.3f}")
        if metrics is not None:
            tmp = metrics.with_name(f".{metrics.name}.tmp")
            tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
            tmp.replace(metrics)
        if checkpoint is not None:
            _save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "order_rng": order.get_state(),
                    "augment_rng": augment_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "wall_time": wall,
                    "epoch": epoch + 1,
                },
                checkpoint,
            )
    bar.close()
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    if save_model is not None:
        _save_atomic(model.state_dict(), save_model)
    calls = optimizer.closure_calls if isinstance(optimizer, PerturbationOptimizer) else total_steps
    last = history[-1]
    return RunResult(
        method=method.label,
        seed=seed,
        test_accuracy=last["test_accuracy"],
        test_loss=last["test_loss"],
        train_loss=train_loss,
        train_accuracy=train_acc,
        wall_time=wall,
        cpu_time=cpu,
        steps=total_steps,
        closure_calls=calls,
        history=history,
        val_accuracy=last.get("val_accuracy"),
    )
