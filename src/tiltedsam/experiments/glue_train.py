"""GLUE fine-tuning of the top layers of a text encoder on a cache of the frozen layers' output.

Only the top ``k`` transformer layers and a linear head are trained (``trainable_layers=k``);
the embeddings and the lower layers are frozen.  Their output does not depend on the trainable
parameters, so it is computed **once per split** (eval mode, length-sorted batches with dynamic
padding) and kept in memory as one unpadded ``(length, hidden)`` tensor per example
(:func:`encode_frozen`).  A training step pads the cached states of its batch to the batch's
longest sequence and runs only the top layers + mean pooling + head (:class:`TopLayers`); every
perturbed pass of SAM / TSAM reuses the same cached input, since perturbations touch trainable
parameters only.  The output equals the full model's (``TextPairModel``) to float rounding,
padding included (``tests/test_glue_train.py``).  Departure from full fine-tuning: the frozen
lower layers run without dropout (their output is cached once, in eval mode).

``glue_sweep`` runs a grid of method specs × seeds on one task with the two-stage selection of
``tiltedsam sweep --select-seeds``: every grid point on ``select_seeds``, the best configuration
of each optimizer chosen on the mean validation score (a seeded ``val_fraction`` of the GLUE
*train* split, held out from training), then the winners on the other seeds.  The GLUE dev split
is the reported test set and is never used for selection.  Runs are stored like the other
harness commands, in the run store (``runs/<method>/<key>-seed<k>/``, keyed by the whole
configuration); finished runs are read back when the command is run again.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._files import save_torch, write_atomic, write_json
from tiltedsam.data.glue import TASKS, TextPairs, glue_metrics, load_glue_split
from tiltedsam.experiments.configs import GlueConfig, settings
from tiltedsam.experiments.report import write_glue_report
from tiltedsam.experiments.selection import expand_grid, select_glue
from tiltedsam.experiments.store import RunConfig, full_options, run_or_load
from tiltedsam.optim import MethodSpec, build_optimizer, parse_method, run_budget


def _load_encoder(path: str | Path | None):
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ImportError(
            "GLUE fine-tuning needs transformers: pip install 'tiltedsam[text]'"
        ) from None
    from tiltedsam.models.text import default_encoder_path

    path = Path(path) if path is not None else default_encoder_path()
    if not path.exists():
        raise FileNotFoundError(f"encoder folder not found: {path}")
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return encoder.eval(), tokenizer


def _layers(encoder: nn.Module) -> nn.ModuleList:
    try:
        return encoder.encoder.layer
    except AttributeError:
        raise ValueError(
            f"{type(encoder).__name__}: expected a BERT-style encoder with .encoder.layer"
        ) from None


@torch.no_grad()
def encode_frozen(
    encoder: nn.Module,
    tokenizer,
    text_a: Sequence[str],
    text_b: Sequence[str] | None,
    *,
    trainable_layers: int,
    max_length: int = 128,
    batch_size: int = 64,
) -> list[Tensor]:
    """The output of the frozen part (embeddings + all but the top ``trainable_layers`` layers),
    one unpadded ``(length, hidden)`` float tensor per example, in the order of ``text_a``.

    Computed in eval mode over length-sorted batches padded to their longest sequence.
    """
    layers = _layers(encoder)
    if not 0 <= trainable_layers <= len(layers):
        raise ValueError(f"trainable_layers must be in [0, {len(layers)}], got {trainable_layers}")
    split = len(layers) - trainable_layers
    ids = tokenizer(list(text_a), list(text_b) if text_b is not None else None,
                    truncation=True, max_length=max_length)  # fmt: skip
    lengths = [len(x) for x in ids["input_ids"]]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[Tensor | None] = [None] * len(lengths)
    was_training = encoder.training
    encoder.eval()
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        features = [{k: ids[k][i] for k in ids} for i in chunk]
        batch = tokenizer.pad(features, padding=True, return_tensors="pt")
        hidden = encoder(**batch, output_hidden_states=True).hidden_states[split]
        for row, i in enumerate(chunk):
            out[i] = hidden[row, : lengths[i]].clone()
    encoder.train(was_training)
    return out  # type: ignore[return-value]


def pad_states(states: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Pad ``(length, hidden)`` tensors on the right to ``(batch, longest, hidden)`` + a 0/1 mask."""
    longest = max(s.shape[0] for s in states)
    hidden = states[0].new_zeros(len(states), longest, states[0].shape[1])
    mask = torch.zeros(len(states), longest, dtype=torch.long)
    for row, s in enumerate(states):
        hidden[row, : s.shape[0]] = s
        mask[row, : s.shape[0]] = 1
    return hidden, mask


def additive_attention_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The ``(batch, 1, 1, length)`` additive mask of a 0/1 padding ``mask``: 0 where a token is
    kept, ``finfo(dtype).min`` where it is padding (added to the attention scores before the
    softmax, for every query)."""
    keep = mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


class TopLayers(nn.Module):
    """The top ``trainable_layers`` layers of ``encoder`` (copied), mean pooling and a linear head.

    ``forward(hidden, mask)`` takes the cached frozen output padded by :func:`pad_states`; the
    attention mask is the additive one BERT's layers take (:func:`additive_attention_mask`), so
    padding is ignored exactly as in the full model (tested for equality with it).  ``num_labels=1`` gives one score per example (regression).
    """

    def __init__(self, encoder: nn.Module, trainable_layers: int, num_labels: int) -> None:
        super().__init__()
        layers = _layers(encoder)
        if not 0 <= trainable_layers <= len(layers):
            raise ValueError(
                f"trainable_layers must be in [0, {len(layers)}], got {trainable_layers}"
            )
        self.layers = nn.ModuleList(
            copy.deepcopy(layer) for layer in layers[len(layers) - trainable_layers :]
        )
        for p in self.layers.parameters():
            p.requires_grad_(True)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        if len(self.layers):
            attention = additive_attention_mask(mask, hidden.dtype)
            for layer in self.layers:
                out = layer(hidden, attention)
                hidden = out[0] if isinstance(out, tuple) else out
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        out = self.head(pooled)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


@dataclass
class CachedSplit:
    states: list[Tensor]
    labels: Tensor

    def __len__(self) -> int:
        return len(self.states)


@dataclass
class GlueData:
    """A task's train / validation / dev splits as frozen-layer caches, with the encoder."""

    task: str
    train: CachedSplit
    val: CachedSplit
    dev: CachedSplit
    encoder: nn.Module
    num_labels: int
    cache_seconds: float

    @property
    def regression(self) -> bool:
        return TASKS[self.task].regression


def default_glue_root() -> Path:
    return Path("../shared/data/glue")


def split_train(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, validation) index lists of the GLUE train split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} leaves no training examples out of {n}")
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def _labels(pairs: TextPairs, regression: bool) -> Tensor:
    if pairs.labels is None:
        raise ValueError(f"{pairs.task}: this split has no labels")
    return torch.tensor(pairs.labels, dtype=torch.float32 if regression else torch.long)


def _subset(pairs: TextPairs, idx: Sequence[int]) -> TextPairs:
    pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
    return TextPairs(pairs.task, pick(pairs.text_a), pick(pairs.text_b), pick(pairs.labels))


def load_glue_data(
    config: GlueConfig,
    data_path: str | Path | None = None,
    encoder_path: str | Path | None = None,
    *,
    log=print,
) -> GlueData:
    """Read the task's train and dev TSVs, split off validation, and cache the frozen output."""
    root = Path(data_path) if data_path is not None else default_glue_root()
    if not (root / config.task).is_dir():
        raise FileNotFoundError(
            f"GLUE task folder not found: {root / config.task} (pass --data-path, the folder "
            f"holding {config.task}/train.tsv and {config.task}/dev.tsv)"
        )
    spec = TASKS[config.task]
    train_all = load_glue_split(root, config.task, "train")
    dev = load_glue_split(root, config.task, "dev")
    train_idx, val_idx = split_train(len(train_all), config.val_fraction, config.split_seed)
    if config.train_subset is not None and config.train_subset < len(train_idx):
        g = torch.Generator().manual_seed(config.split_seed + 1)
        keep = torch.randperm(len(train_idx), generator=g)[: config.train_subset].tolist()
        train_idx = sorted(train_idx[i] for i in keep)
    encoder, tokenizer = _load_encoder(encoder_path)
    if spec.regression:
        num_labels = 1
    elif spec.label_names is not None:
        num_labels = len(spec.label_names)
    else:
        num_labels = int(max(train_all.labels)) + 1  # type: ignore[arg-type]
        num_labels = max(num_labels, 2)
    start = time.perf_counter()
    splits = {}
    for name, pairs in (("train", _subset(train_all, train_idx)),
                        ("val", _subset(train_all, val_idx)), ("dev", dev)):  # fmt: skip
        states = encode_frozen(encoder, tokenizer, pairs.text_a, pairs.text_b,
                               trainable_layers=config.trainable_layers,
                               max_length=config.max_length)  # fmt: skip
        splits[name] = CachedSplit(states, _labels(pairs, spec.regression))
    seconds = time.perf_counter() - start
    log(f"{config.task}: cached the frozen layers' output of {len(splits['train'])} train / "
        f"{len(splits['val'])} validation / {len(splits['dev'])} dev examples in {seconds:.1f}s")  # fmt: skip
    return GlueData(config.task, splits["train"], splits["val"], splits["dev"], encoder,
                    num_labels, seconds)  # fmt: skip


def batch_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                group_by_length: bool = True) -> list[list[int]]:  # fmt: skip
    """One epoch's batches of example indices.

    A random permutation cut into batches; with ``group_by_length`` (as Hugging Face's
    ``group_by_length``) the permutation is cut into mega-batches of 50 batches, each sorted by
    length before it is cut into batches, and the batches are then shuffled: every example is seen
    once per epoch, in a random order, with far less padding.
    """
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    mega = 50 * batch_size
    batches = []
    for first in range(0, len(perm), mega):
        chunk = sorted(perm[first : first + mega], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


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
    from tqdm.auto import tqdm

    from tiltedsam.optim import PerturbationOptimizer

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
    bar = tqdm(total=total_steps, desc=f"{data.task} {method.label} seed {seed}",
               disable=not progress, leave=False, dynamic_ncols=True)  # fmt: skip
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
        bar.set_postfix(loss=f"{record['step_loss']:.3f}")
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
    root = Path(out)
    encoder = str(encoder_path) if encoder_path is not None else "all-MiniLM-L6-v2"
    settings = {"task": config.task, "grid": list(grid), "seeds": list(seeds),
                "select_seeds": list(select_seeds) if select_seeds is not None else None,
                "encoder": encoder, "config": asdict(config)}  # fmt: skip
    write_json(root / "glue.json", settings)
    if data is None:
        data = load_glue_data(config, data_path, encoder_path, log=log)
    settings.update(cache_seconds=data.cache_seconds, encoder_layers=len(_layers(data.encoder)),
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

                result = run_or_load(root, _run_config(spec, seed, run, encoder), train, wait=False)
                if result is None:
                    log(f"{spec.label} seed {seed}: claimed by another process, skipped")
                    continue
                result = {**result, "method": spec.label}
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
    write_glue_report(root)
    return results


__all__ = [
    "GlueConfig",
    "GlueData",
    "TopLayers",
    "encode_frozen",
    "glue_sweep",
    "load_glue_data",
    "pad_states",
    "select_glue",
    "train_glue_run",
]
