"""GLUE splits as caches of a frozen encoder's output (``tiltedsam glue``).

Only the top ``k`` transformer layers and a linear head are trained (``trainable_layers=k``);
the embeddings and the lower layers are frozen.  Their output does not depend on the trainable
parameters, so it is computed **once per split** (eval mode, length-sorted batches with dynamic
padding) and kept in memory as one unpadded ``(length, hidden)`` tensor per example
(:func:`encode_frozen`).  A training step pads the cached states of its batch to the batch's
longest sequence (:func:`~tiltedsam.models.text.pad_states`) and runs only the top layers
(:class:`~tiltedsam.models.text.TopLayers`); every perturbed pass of SAM / TSAM reuses the same
cached input, since perturbations touch trainable parameters only.  The output equals the full
model's to float rounding, padding included (``tests/test_glue_train.py``).  Departure from full
fine-tuning: the frozen lower layers run without dropout (their output is cached once).

The validation split is a seeded ``val_fraction`` of the GLUE *train* split (:func:`split_train`);
the dev split is the reported test set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from tiltedsam.data.glue import TASKS, TextPairs, load_glue_split
from tiltedsam.models.text import encoder_layers, load_encoder


class GlueSettings(Protocol):
    """What the cache needs of a ``GlueConfig``."""

    task: str
    trainable_layers: int
    max_length: int
    val_fraction: float
    split_seed: int
    train_subset: int | None


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
    layers = encoder_layers(encoder)
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
    # The settings the caches were built with (:data:`CACHE_SETTINGS` of the config).
    built_with: dict[str, Any] = field(default_factory=dict)

    @property
    def regression(self) -> bool:
        return TASKS[self.task].regression

    def check_built_for(self, config: Any) -> None:
        """A ``ValueError`` if ``config`` asks for caches other than these: the cached output
        of other frozen layers, or of other tokens, would be trained on silently."""
        differ = [
            f"{key} {value!r} (config: {getattr(config, key)!r})"
            for key, value in self.built_with.items()
            if getattr(config, key) != value
        ]
        if differ:
            raise ValueError(
                "the GLUE data were cached with other settings than the config's: "
                + ", ".join(differ)
                + "; build them with load_glue_data(config, ...)"
            )


# What the caches depend on, recorded in ``GlueData.built_with`` and checked before training.
CACHE_SETTINGS = ("task", "trainable_layers", "max_length", "train_subset", "val_fraction",
                  "split_seed")  # fmt: skip


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
    config: GlueSettings,
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
    encoder, tokenizer = load_encoder(encoder_path)
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
                    num_labels, seconds,
                    built_with={key: getattr(config, key) for key in CACHE_SETTINGS})  # fmt: skip


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


__all__ = [
    "CachedSplit",
    "GlueData",
    "batch_order",
    "encode_frozen",
    "load_glue_data",
    "split_train",
]
