"""Issue #19: a resumed run of a model with dropout equals the uninterrupted run only when the
global RNG state is restored too; the harness's checkpoints hold it (``torch_rng``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiltedsam.experiments import TrainConfig, parse_method, train_run
from tiltedsam.models import MODELS

from .reliability.conftest import tiny_data

SPEC = parse_method("tsam:num_samples=2")


@pytest.fixture
def dropout_model(monkeypatch):
    def build(shape, k):
        return nn.Sequential(nn.Flatten(), nn.Linear(shape[-1], 32), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(32, k))  # fmt: skip

    monkeypatch.setitem(MODELS, "mlp_dropout", build)
    return TrainConfig(model="mlp_dropout", epochs=3, batch_size=16, lr=0.05)


def _final(result):
    return result.test_accuracy, result.test_loss, [h["step_loss"] for h in result.history]


def _interrupted_then_resumed(tmp_path, config):
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(InterruptedError):
        train_run(SPEC, tiny_data(), config, 0, progress=False, checkpoint=checkpoint,
                  stop_after_epochs=1)  # fmt: skip
    torch.manual_seed(1234)  # the process that resumes starts from another global RNG state
    return train_run(SPEC, tiny_data(), config, 0, progress=False, checkpoint=checkpoint)


def test_a_resumed_dropout_run_equals_the_uninterrupted_one(tmp_path, dropout_model):
    uninterrupted = train_run(SPEC, tiny_data(), dropout_model, 0, progress=False)
    resumed = _interrupted_then_resumed(tmp_path, dropout_model)
    assert _final(resumed) == _final(uninterrupted)


def test_without_the_global_rng_state_the_dropout_run_differs(tmp_path, dropout_model,
                                                              monkeypatch):  # fmt: skip
    """The control: the same resume with ``torch.set_rng_state`` made a no-op diverges, so the
    test above holds because the checkpoint restores the global RNG (dropout's masks)."""
    uninterrupted = train_run(SPEC, tiny_data(), dropout_model, 0, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(InterruptedError):
        train_run(SPEC, tiny_data(), dropout_model, 0, progress=False, checkpoint=checkpoint,
                  stop_after_epochs=1)  # fmt: skip
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    resumed = train_run(SPEC, tiny_data(), dropout_model, 0, progress=False, checkpoint=checkpoint)
    assert _final(resumed) != _final(uninterrupted)
