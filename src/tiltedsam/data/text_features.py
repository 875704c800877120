"""GLUE classification tasks as an :class:`ArrayDataset` of frozen-encoder features.

The image-style harness (``train_run``, ``tiltedsam study``) trains a model on tensors ``x``.
For text, ``x`` holds what the frozen lower layers of all-MiniLM-L6-v2 compute: for each
example a ``(max_length, hidden + 1)`` tensor, the hidden states of its tokens (zero-padded)
with the padding mask (1 for a real token) in the last channel.  The trainable top layers
(:class:`tiltedsam.models.text.TopLayersOnFeatures`) unpack it.  Only the examples used are
encoded: a seeded training subset (like ``load_dataset``'s ``train_subset``) and GLUE dev,
which is the test set here (GLUE's test labels are hidden).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tiltedsam.data.glue import TASKS, load_glue_split
from tiltedsam.data.mnist1d import ArrayDataset
from tiltedsam.models.text import pack

ENCODER_LAYERS = 6  # all-MiniLM-L6-v2


def load_text_features(
    task: str,
    root: str | Path,
    *,
    trainable_layers: int,
    max_length: int = 64,
    train_subset: int | None = None,
    seed: int = 0,
    encoder_path: str | Path | None = None,
) -> ArrayDataset:
    """Features of GLUE ``task`` (a classification task) after the frozen
    ``6 - trainable_layers`` lower layers; the training subset drawn from ``seed``."""
    from tiltedsam.data.glue_cache import encode_frozen
    from tiltedsam.models.text import load_encoder

    if task not in TASKS or TASKS[task].regression:
        raise ValueError(f"text features need a GLUE classification task, got {task!r}")
    if not 1 <= trainable_layers <= ENCODER_LAYERS:
        raise ValueError(
            f"trainable_layers must be in [1, {ENCODER_LAYERS}], got {trainable_layers}"
        )
    train = load_glue_split(root, task, "train")
    dev = load_glue_split(root, task, "dev")
    keep = list(range(len(train)))
    if train_subset is not None:
        if not 0 < train_subset <= len(train):
            raise ValueError(f"train_subset must be in [1, {len(train)}], got {train_subset}")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        keep = perm[:train_subset].sort().values.tolist()
    encoder, tokenizer = load_encoder(encoder_path)

    def features(pairs, rows):
        text_a = [pairs.text_a[i] for i in rows]
        text_b = None if pairs.text_b is None else [pairs.text_b[i] for i in rows]
        states = encode_frozen(encoder, tokenizer, text_a, text_b,
                               trainable_layers=trainable_layers, max_length=max_length)  # fmt: skip
        labels = torch.tensor([int(pairs.labels[i]) for i in rows], dtype=torch.long)
        return pack(states, max_length), labels

    x_train, y_train = features(train, keep)
    x_test, y_test = features(dev, range(len(dev)))
    num_classes = len(TASKS[task].label_names or (0, 1))
    return ArrayDataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        num_classes=num_classes,
                        name=f"{task} (MiniLM, {ENCODER_LAYERS - trainable_layers} frozen layers)")  # fmt: skip
