"""One training run: a model, a method and a seed on an in-memory data set."""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tiltedsam._files import save_torch, write_atomic
from tiltedsam._validation import check_int_at_least
from tiltedsam.data.cifar import random_crop_flip
from tiltedsam.data.mnist1d import ArrayDataset
from tiltedsam.experiments.checkpoint import (
    CheckpointError,
    load_latest,
    save_checkpoint,
)
from tiltedsam.experiments.configs import TrainConfig, settings
from tiltedsam.experiments.progress import progress_bar
from tiltedsam.experiments.run_control import Stopped, resolve_device
from tiltedsam.models import create_model
from tiltedsam.optim import MethodSpec, PerturbationOptimizer, build_optimizer, run_budget
from tiltedsam.optim.specs import check_spec

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "order_rng", "augment_rng", "torch_rng",
                   "history", "wall_time", "epoch")  # fmt: skip


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
    skipped_steps: int = 0  # steps a nonfinite policy skipped
    skipped_samples: int = 0  # TSAM samples dropped by nonfinite="skip_sample"
    cpu_time: float | None = None
    # With label noise: accuracy on the training inputs against their *clean* labels (how much
    # of the true signal the final model still predicts; 1 - this is the memorised noise share).
    train_accuracy_clean: float | None = None

    device: str | None = None  # where it trained (not part of the run's key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256):
    """(mean cross-entropy, accuracy) of ``model`` in eval mode; the mode is restored after.

    Batches of 256 keep a small CNN's activations in cache: on one CPU thread the 10,000 CIFAR-10
    test images take 2.3 s against 3.9 s in batches of 1,000 (the result does not depend on it).
    """
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size].to(device))
        target = y[start : start + batch_size].to(device)
        total_loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


def run_fingerprint(
    method: MethodSpec, data: ArrayDataset, config: TrainConfig, seed: int
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: method and options, seed, training settings
    and the data's shape (JSON-normalised, so it compares equal after a round trip)."""
    fingerprint = {
        "method": method.name,
        "options": method.kwargs(),
        "seed": seed,
        "train": settings(config),
        "data": {
            "name": data.name,
            "input_shape": list(data.x_train.shape[1:]),
            "num_classes": data.num_classes,
            "train_examples": len(data.x_train),
            "val_examples": 0 if data.x_val is None else len(data.x_val),
            "test_examples": len(data.x_test),
        },
    }
    return json.loads(json.dumps(fingerprint, default=str))


def _check_model_fits_data(model: nn.Module, data: ArrayDataset, name: str) -> None:
    """One forward pass on one example (eval mode, no state change); a clear error if the
    model does not accept the data's inputs or gives the wrong number of outputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(data.x_train[:1])
    except (RuntimeError, ValueError) as err:  # BatchNorm raises ValueError on a wrong rank
        raise ValueError(
            f"model {name!r} does not fit data set {data.name!r} (inputs of shape "
            f"{tuple(data.x_train.shape[1:])}): {err}. Pick a model for this data "
            "(cnn1d or mlp for mnist1d; cnn2d, mlp or a ResNet for images)"
        ) from None
    finally:
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise ValueError(
            f"model {name!r} gives outputs of shape {tuple(out.shape)} for data set "
            f"{data.name!r}, expected (batch, {data.num_classes}) for its {data.num_classes} classes"
        )


def check_seeds(seeds: Any, name: str = "seeds") -> list[int]:
    """A non-empty list of distinct int seeds (``0,0`` would count one run as two seeds)."""
    if isinstance(seeds, int | str) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"{name} must be a list of ints, got {seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"{name} must hold at least one seed, got none")
    for seed in seeds:
        check_int_at_least("seed", seed, 0)
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ValueError(
            f"{name} must be distinct, got {seeds} (seed {', '.join(map(str, twice))} more than "
            "once: one run would count as several seeds)"
        )
    return seeds


def check_method(method: MethodSpec, config: TrainConfig) -> None:
    """Build ``method``'s optimizer on a dummy parameter, so a bad option fails before training,
    with an error that names the method and the option (and lists the allowed ones)."""
    check_spec(method, config.base, config.base_kwargs())


def read_metrics(metrics: Path | None) -> list[dict[str, Any]]:
    """The epoch records a metrics file holds (none if there is no file)."""
    if metrics is None or not metrics.exists():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def _metrics_records(metrics: Path | None) -> int:
    """How many epoch records a metrics file holds (0 if there is none)."""
    return len(read_metrics(metrics))


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
    device: str = "cpu",
    on_epoch: Any = None,
) -> RunResult:
    """Train ``config.model`` on ``data`` with ``method`` from seed ``seed``; evaluate each epoch.

    With ``checkpoint``, the whole state (model, optimizer incl. base state and perturbation RNG,
    LR scheduler, data-order and augmentation generators, torch's global RNG, history, wall time)
    is written there after every epoch, atomically and with a checksum, the previous one kept as
    ``<stem>.prev.pt`` (:mod:`tiltedsam.experiments.checkpoint`).  A run that finds a checkpoint
    resumes after its last finished epoch: an interrupted and resumed run ends with the same
    parameters and metrics as an uninterrupted one (on CPU).  A damaged checkpoint is skipped
    with a warning for the previous one; :class:`CheckpointError` is raised when no checkpoint is
    usable, when it was written for another configuration, or when ``metrics`` records finished
    epochs but no checkpoint exists (a run never restarts from scratch over its own results).
    ``stop_after_epochs`` ends the call early (to test resumption).  With ``metrics``, the
    per-epoch records are (re)written there as JSON lines after every epoch.  With
    ``save_model``, the final ``model.state_dict()`` is written there (atomically).
    ``device`` (``auto``, ``cpu``, ``cuda``) is where the model trains (batches are moved there; the data
    stay on the CPU); it is recorded in the result, not in the run's configuration.  A run
    checkpointed on a GPU resumes on a GPU.  ``on_epoch(record)`` is called after every epoch's
    checkpoint and metrics; a true return ends the run with :class:`Stopped`.

    An epoch that ends with non-finite parameters raises ``FloatingPointError`` before its
    checkpoint is written, so the last checkpoint holds the last finite state.
    """
    where = resolve_device(device)
    torch.manual_seed(seed)
    model = create_model(config.model, data.x_train.shape[1:], data.num_classes)
    _check_model_fits_data(model, data, config.model)
    model.to(where)
    fingerprint = run_fingerprint(method, data, config, seed)
    epochs = config.epochs * run_budget(method)  # ESAM1: TSAM's pass budget
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    total_steps = steps_per_epoch * epochs
    optimizer = build_optimizer(method, model.parameters(), base=config.base,
                                base_kwargs=config.base_kwargs(), seed=seed,
                                total_steps=total_steps, model=model)  # fmt: skip
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
    closure_calls_before = 0
    if checkpoint is not None:
        found = load_latest(checkpoint, _require_keys)
        if found is None and _metrics_records(metrics):
            raise CheckpointError(
                f"{metrics} records {_metrics_records(metrics)} finished epoch(s) but there is no "
                f"checkpoint {checkpoint}; refusing to train from scratch over them. Restore the "
                f"checkpoint, or delete {metrics} (--rerun) to start this run over"
            )
        if found is not None:
            state, source = found
            stored = state.get("fingerprint")
            if stored is not None and stored != fingerprint:
                changed = sorted(k for k in fingerprint if stored.get(k) != fingerprint[k])
                raise CheckpointError(
                    f"{source} was written by a run with different settings (they differ in "
                    f"{', '.join(changed)}); resuming it would mix two configurations. Delete "
                    f"it (--rerun) to train this configuration from scratch, or use another "
                    "output directory"
                )
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                if scheduler is not None:
                    scheduler.load_state_dict(state["scheduler"])
                order.set_state(state["order_rng"])
                augment_gen.set_state(state["augment_rng"])
                torch.set_rng_state(state["torch_rng"])
            except (RuntimeError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(
                    f"{source} does not match this run's model or optimizer ({err}); delete it "
                    "(--rerun) to train from scratch"
                ) from None
            history, wall, start_epoch = state["history"], state["wall_time"], state["epoch"]
            closure_calls_before = int(state.get("closure_calls", 0))
            cpu = history[-1].get("cpu_time", 0.0) if history else 0.0
    if isinstance(optimizer, PerturbationOptimizer):
        optimizer.closure_calls = closure_calls_before
    bar = progress_bar(
        total=total_steps,
        initial=start_epoch * steps_per_epoch,
        desc=f"{method.label} seed {seed}",
        position=position,
        enabled=progress,
    )
    for epoch in range(start_epoch, epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            bar.close()
            raise InterruptedError(f"stopped after {epoch} epochs (stop_after_epochs)")
        model.train()
        perm = torch.randperm(len(data.x_train), generator=order)
        step_losses = torch.zeros(())
        finite_steps = torch.zeros((), dtype=torch.long)
        start, cpu_start = time.perf_counter(), time.process_time()
        for first in range(0, len(perm), config.batch_size):
            idx = perm[first : first + config.batch_size]
            inputs, targets = data.x_train[idx], data.y_train[idx]
            if data.augment == "crop_flip":
                inputs = random_crop_flip(inputs, augment_gen, data.pad_value)
            inputs, targets = inputs.to(where), targets.to(where)

            def closure(inputs=inputs, targets=targets, backward=True):
                loss = loss_fn(model(inputs), targets)
                if backward:  # tsam-resample scores perturbations with backward=False
                    loss.backward()
                return loss

            optimizer.zero_grad(set_to_none=True)
            shards = getattr(optimizer, "shards_per_step", 0)  # split-batch estimators
            loss = optimizer.step(shard_closures(closure, inputs, targets, shards)
                                  if shards else closure).detach()  # fmt: skip
            # A step skipped by a nonfinite policy returns a non-finite loss: not averaged.
            finite = torch.isfinite(loss)
            step_losses = step_losses + torch.where(finite, loss, 0.0)
            finite_steps = finite_steps + finite
            if scheduler is not None:
                scheduler.step()
            bar.update(1)
        wall += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            bar.close()
            raise FloatingPointError(
                f"{method.label} seed {seed} diverged in epoch {epoch + 1}: parameters "
                f"{bad[:3]}{' ...' if len(bad) > 3 else ''} hold NaN/inf (the last checkpoint, "
                f"epoch {epoch}, is kept). Lower the learning rate, or give the method the option "
                "nonfinite=skip (tsam: nonfinite=skip_sample) to skip non-finite steps"
            )
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        n_finite = int(finite_steps)
        record = {
            "epoch": epoch + 1,
            "step_loss": float(step_losses) / n_finite if n_finite else math.nan,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "wall_time": wall,
            "cpu_time": cpu,
        }
        if data.x_val is not None:
            record["val_loss"], record["val_accuracy"] = evaluate(model, data.x_val, data.y_val)
        history.append(record)
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{record['step_loss']:.3f}",
                        test_acc=f"{test_acc:.3f}")  # fmt: skip
        if checkpoint is not None:  # before the metrics, so metrics never run ahead of it
            save_checkpoint(
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
                    "closure_calls": getattr(optimizer, "closure_calls", 0),
                    "fingerprint": fingerprint,
                },
                checkpoint,
            )
        if metrics is not None:
            write_atomic(metrics, "".join(json.dumps(h) + "\n" for h in history))
        if on_epoch is not None and epoch + 1 < epochs and on_epoch(record):
            bar.close()
            raise Stopped(history)
    bar.close()
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    train_acc_clean = None
    if data.y_train_clean is not None:
        train_acc_clean = evaluate(model, data.x_train, data.y_train_clean)[1]
    if save_model is not None:
        state = model.state_dict()
        if where.type != "cpu":  # CPU tensors: any machine reads the file
            state = {k: v.cpu() for k, v in state.items()}
        save_torch(save_model, state)
    calls = optimizer.closure_calls if isinstance(optimizer, PerturbationOptimizer) else total_steps
    last = history[-1]
    return RunResult(
        method=method.label,
        seed=seed,
        test_accuracy=last["test_accuracy"],
        test_loss=last["test_loss"],
        train_loss=train_loss,
        train_accuracy=train_acc,
        train_accuracy_clean=train_acc_clean,
        wall_time=wall,
        cpu_time=cpu,
        steps=total_steps,
        closure_calls=calls,
        history=history,
        val_accuracy=last.get("val_accuracy"),
        skipped_steps=getattr(optimizer, "skipped_steps", 0),
        skipped_samples=getattr(optimizer, "skipped_samples", 0),
        device=str(where),
    )


def shard_closures(closure, inputs: torch.Tensor, targets: torch.Tensor, k: int) -> list:
    """``closure`` on each of ``min(k, len(batch))`` nearly equal contiguous shards of the batch,
    each with its size (``tsam-split`` weighs shards by it; a short last batch gives fewer)."""
    from tiltedsam.optim.tsam_split import SizedClosure

    k = min(k, len(targets))
    return [SizedClosure(functools.partial(closure, x, y), len(y))
            for x, y in zip(torch.tensor_split(inputs, k), torch.tensor_split(targets, k), strict=True)]  # fmt: skip


def _require_keys(payload: dict[str, Any], source: Path) -> None:
    missing = [k for k in CHECKPOINT_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{source}: not a training checkpoint (missing {missing})")
