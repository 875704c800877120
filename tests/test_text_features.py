"""Text in the image-style harness: packed frozen-layer features and the top layers on them
give exactly what the GLUE path (TopLayers on padded cached states) gives."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tiltedsam.data.glue import load_glue_split
from tiltedsam.data.glue_cache import encode_frozen
from tiltedsam.data.text_features import load_text_features
from tiltedsam.models.text import (
    TopLayers,
    TopLayersOnFeatures,
    load_encoder,
    pack,
    pad_states,
    unpack,
)

from .test_glue_train import tiny_encoder, write_task  # noqa: F401


def test_pack_and_unpack_round_trip_and_trim_to_the_longest():
    states = [torch.randn(n, 4) for n in (3, 5, 2)]
    x = pack(states, max_length=8)
    assert x.shape == (3, 8, 5)
    hidden, mask = unpack(x)
    assert hidden.shape == (3, 5, 4) and mask.tolist() == [
        [1] * 3 + [0] * 2,
        [1] * 5,
        [1] * 2 + [0] * 3,
    ]
    for row, s in enumerate(states):
        assert torch.equal(hidden[row, : len(s)], s)
    longer = pack([torch.randn(12, 4)], max_length=8)  # truncated to max_length
    assert unpack(longer)[1].shape == (1, 8)


def test_features_model_equals_top_layers_on_the_cache(tmp_path, tiny_encoder):  # noqa: F811
    root = write_task(tmp_path, "RTE", n_train=20, n_dev=6)
    data = load_text_features("RTE", root, trainable_layers=1, max_length=16, train_subset=12,
                              seed=3, encoder_path=tiny_encoder)  # fmt: skip
    assert data.x_train.shape[:2] == (12, 16) and data.num_classes == 2 and len(data.x_test) == 6
    torch.manual_seed(0)
    model = TopLayersOnFeatures(1, 2, path=tiny_encoder).eval()
    encoder, tokenizer = load_encoder(tiny_encoder)
    dev = load_glue_split(root, "RTE", "dev")
    states = encode_frozen(encoder, tokenizer, dev.text_a, dev.text_b, trainable_layers=1,
                           max_length=16)  # fmt: skip
    torch.manual_seed(0)
    reference = TopLayers(encoder, 1, 2).eval()
    hidden, mask = pad_states(states)
    with torch.no_grad():
        torch.testing.assert_close(
            model(data.x_test), reference(hidden, mask), rtol=1e-5, atol=1e-6
        )
    assert data.y_test.tolist() == [int(v) for v in dev.labels]
