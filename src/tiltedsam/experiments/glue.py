"""``tiltedsam glue``: fine-tune the top layers of a text encoder on a GLUE task, a grid of
method specs × seeds, with the two-stage selection of ``tiltedsam sweep --select-seeds``.

Every grid point runs on ``select_seeds``, the best configuration of each optimizer is chosen on
the mean validation score (a seeded ``val_fraction`` of the GLUE *train* split, held out from
training), then the winners run on the other seeds.  The GLUE dev split is the reported test set
and is never used for selection.  Runs are stored like the other harness commands, in the run
store (``runs/<method>/<key>-seed<k>/``, keyed by the whole configuration); finished runs are
read back when the command is run again.  The data is a cache of the frozen layers' output
(:mod:`tiltedsam.data.glue_cache`); the trained part is :class:`~tiltedsam.models.text.TopLayers`.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._files import save_torch, write_atomic, write_json
from tiltedsam.data.fingerprint import DataIdentity, glue_identity
from tiltedsam.data.glue import TASKS, glue_metrics
from tiltedsam.data.glue_cache import (
    CachedSplit,
    GlueData,
    batch_order,
    default_glue_root,
    load_glue_data,
)
from tiltedsam.experiments.configs import GlueConfig, settings
from tiltedsam.experiments.glue_report import write_glue_report
from tiltedsam.experiments.selection import expand_grid, select_glue
from tiltedsam.experiments.store import RunConfig, full_options, run_or_load
from tiltedsam.experiments.train import check_seeds
from tiltedsam.models.text import TopLayers, encoder_layers, pad_states
from tiltedsam.optim import MethodSpec, build_optimizer, parse_method, run_budget


def _loss_fn(regression: bool):
    return nn.MSELoss() if regression else nn.CrossEntropyLoss()


@torch.no_grad()
def predict(model: TopLayers, split: CachedSplit, batch_size: int = 128) -> Tensor:
    """Predictions (classes, or scores for regression) in the split's order, eval mode."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(split)), key=lambda i: split.states[i].shape[0])
    outputs: list[Tensor | None] = [None] * len(split)
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        out = model(*pad_states([split.states[i] for i in chunk]))
        for row, i in enumerate(chunk):
            outputs[i] = out[row]
    model.train(was_training)
    out = torch.stack(outputs)  # type: ignore[arg-type]
    return out if out.dim() == 1 else out.argmax(1)


def task_score(task: str, metrics: dict[str, float]) -> float:
    """GLUE's per-task score: the mean of the task's metrics (e.g. (acc + F1) / 2 on MRPC)."""
    return statistics.fmean(metrics[m] for m in TASKS[task].metrics)


def evaluate(model: TopLayers, split: CachedSplit, task: str) -> dict[str, float]:
    pred = predict(model, split)
    metrics = glue_metrics(task, pred.numpy(), split.labels.numpy())
    return {k: (0.0 if math.isnan(v) else v) for k, v in metrics.items()}


def _lr_lambda(schedule: str, warmup_steps: int, total: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


def train_glue_run(
    method: MethodSpec,
    data: GlueData,
    config: GlueConfig,
    seed: int,
    *,
    metrics: Path | None = None,
    save_model: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune the top layers + head from the pretrained weights with ``method`` and ``seed``.

    Evaluates validation and dev after every epoch; the result holds the last epoch's metrics.
    ``wall_time`` counts the training steps only (not the cache, not evaluation).
    """
    from tiltedsam.experiments.progress import progress_bar
    from tiltedsam.optim import PerturbationOptimizer

    data.check_built_for(config)
    torch.manual_seed(seed)
    model = TopLayers(data.encoder, config.trainable_layers, data.num_labels)
    if data.regression:  # start at the mean training score, not 0 (STS-B scores are 0-5)
        with torch.no_grad():
            model.head.bias.fill_(float(data.train.labels.mean()))
    model.train()
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    epochs = config.epochs * run_budget(method)  # ESAM1: TSAM's pass budget
    total_steps = steps_per_epoch * epochs
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = build_optimizer(method, groups, base=config.base, base_kwargs=config.base_kwargs(),
                                seed=seed, total_steps=total_steps, model=model)  # fmt: skip
    warmup_steps = int(config.warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(config.lr_schedule, warmup_steps, total_steps)
    )
    loss_fn = _loss_fn(data.regression)
    order = torch.Generator().manual_seed(seed)
    lengths = [s.shape[0] for s in data.train.states]
    history: list[dict[str, Any]] = []
    wall = 0.0
    bar = progress_bar(total=total_steps, desc=f"{data.task} {method.label} seed {seed}",
                       enabled=progress)  # fmt: skip
    for epoch in range(epochs):
        batches = batch_order(lengths, config.batch_size, order, config.group_by_length)
        step_losses = torch.zeros(())
        start = time.perf_counter()
        for idx in batches:
            hidden, mask = pad_states([data.train.states[i] for i in idx])
            targets = data.train.labels[idx]

            def closure(hidden=hidden, mask=mask, targets=targets):
                loss = loss_fn(model(hidden, mask), targets)
                loss.backward()
                return loss

            optimizer.zero_grad(set_to_none=True)
            step_losses = step_losses + optimizer.step(closure).detach()
            scheduler.step()
            bar.update(1)
        wall += time.perf_counter() - start
        record = {"epoch": epoch + 1, "step_loss": float(step_losses) / steps_per_epoch,
                  "val": evaluate(model, data.val, data.task),
                  "dev": evaluate(model, data.dev, data.task), "wall_time": wall}  # fmt: skip
        history.append(record)
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{record['step_loss']:.3f}")
        if metrics is not None:
            write_atomic(metrics, "".join(json.dumps(h) + "\n" for h in history))
    bar.close()
    if save_model is not None:
        save_torch(save_model, model.state_dict())
    calls = optimizer.closure_calls if isinstance(optimizer, PerturbationOptimizer) else total_steps
    last = history[-1]
    return {
        "method": method.label,
        "seed": seed,
        "task": data.task,
        "val": last["val"],
        "dev": last["dev"],
        "val_score": task_score(data.task, last["val"]),
        "dev_score": task_score(data.task, last["dev"]),
        "train_loss": last["step_loss"],
        "wall_time": wall,
        "steps": total_steps,
        "closure_calls": calls,
        "history": history,
    }


def _run_config(spec: MethodSpec, seed: int, config: GlueConfig, encoder: str) -> RunConfig:
    options = full_options(spec.name, spec.options, config.shared_options())
    return RunConfig(
        spec.name, options, seed, {"name": "glue", "encoder": encoder}, settings(config)
    )


def glue_sweep(
    grid: Sequence[str],
    *,
    config: GlueConfig,
    seeds: Sequence[int] = (0, 1, 2),
    select_seeds: Sequence[int] | None = None,
    out: str | Path = "runs/glue",
    data_path: str | Path | None = None,
    encoder_path: str | Path | None = None,
    progress: bool = True,
    data: GlueData | None = None,
    lr_from_erm: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Run ``grid`` (sweep syntax, ``tsam:tilt=1/5``) × seeds on one task and write the report.

    Without ``select_seeds`` every grid point runs on every seed.  With it, stage 1 runs every
    grid point on ``select_seeds``, each optimizer's configuration with the best mean validation
    score is chosen, and stage 2 runs the winners on the remaining ``seeds``.  Runs go through
    the run store (:func:`~tiltedsam.experiments.store.run_or_load`); a run another process
    holds is skipped (run the command again to read it).

    ``lr_from_erm`` (with ``select_seeds``): the ERM grid points run first, and the learning rate
    of the selected one becomes the shared ``lr`` of every other grid point without its own
    ``lr=`` option (tune the base learning rate with the base optimizer, then ρ and t).
    """
    specs = expand_grid(grid)
    labels = [parse_method(s).label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"grid points must be distinct, got {labels}")
    seeds = check_seeds(seeds)
    if select_seeds is not None:
        select_seeds = check_seeds(select_seeds, "select_seeds")
    root = Path(out)
    encoder = str(encoder_path) if encoder_path is not None else "all-MiniLM-L6-v2"
    settings = {"task": config.task, "grid": list(grid), "seeds": list(seeds),
                "select_seeds": list(select_seeds) if select_seeds is not None else None,
                "encoder": encoder, "config": asdict(config)}  # fmt: skip
    identity = None  # data handed in: not from files
    if data is not None:
        data.check_built_for(config)  # before anything is written
    if data is None:  # (before anything is written: a missing task folder leaves no directory)
        data = load_glue_data(config, data_path, encoder_path, log=log)
        root_path = data_path if data_path is not None else default_glue_root()

        def identity() -> DataIdentity:
            return glue_identity(root_path, config.task, encoder_path)

    settings.update(cache_seconds=data.cache_seconds, encoder_layers=len(encoder_layers(data.encoder)),
                    examples={"train": len(data.train), "val": len(data.val),
                              "dev": len(data.dev)})  # fmt: skip
    write_json(root / "glue.json", settings)

    def run_all(spec_texts: Sequence[str], run_seeds: Sequence[int],
                shared: GlueConfig) -> list[dict[str, Any]]:  # fmt: skip
        done = []
        for text in spec_texts:
            spec = parse_method(text)
            run = config if spec.name == "erm" else shared
            for seed in run_seeds:

                def train(directory: Path, spec=spec, seed=seed, run=run) -> dict[str, Any]:
                    return train_glue_run(spec, data, run, seed, progress=progress,
                                          metrics=directory / "metrics.jsonl",
                                          save_model=directory / "model.pt")  # fmt: skip

                stored = _run_config(spec, seed, run, encoder)
                result = run_or_load(root, stored, train, wait=False, identity=identity)
                if result is None:
                    log(f"{spec.label} seed {seed}: claimed by another process, skipped")
                    continue
                result = {**result, "method": spec.label, "config": stored.as_dict()}
                done.append(result)
                log(f"{run.task} {spec.label:>28s} seed {seed}: val {result['val_score']:.4f} "
                    f"dev {result['dev_score']:.4f} loss {result['train_loss']:.4f} "
                    f"{result['wall_time']:.1f}s")  # fmt: skip
        return done

    shared = config
    if lr_from_erm:
        erm = [s for s in specs if parse_method(s).name == "erm"]
        if select_seeds is None or not erm:
            raise ValueError("lr_from_erm needs select_seeds and at least one erm grid point")
        best = select_glue(run_all(erm, select_seeds, config), labels)["erm"]
        shared = replace(config, lr=float(parse_method(best).kwargs().get("lr", config.lr)))
        log(f"{config.task}: ERM selected {best}; shared lr for the other methods: {shared.lr:g}")
        settings.update(lr_from_erm=best, shared_lr=shared.lr)
        write_json(root / "glue.json", settings)
    if select_seeds is None:
        results = run_all(specs, seeds, shared)
    else:
        results = run_all(specs, select_seeds, shared)
        winners = select_glue(results, labels)
        rest = [s for s in seeds if s not in select_seeds]
        results += run_all(list(winners.values()), rest, shared)
    write_glue_report(root, results)  # this command's runs (others may share the directory)
    return results


__all__ = ["GlueConfig", "glue_sweep", "load_glue_data", "train_glue_run"]
