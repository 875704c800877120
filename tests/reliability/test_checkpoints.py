"""Checkpoints: atomic writes, corruption detected, fallback to the previous one with a warning,
a clear error (never a silent restart) when nothing usable is left or the settings changed."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from tiltedsam.cli import main
from tiltedsam.experiments import TrainConfig, parse_method, train_run
from tiltedsam.experiments.checkpoint import (
    MAGIC,
    CheckpointError,
    CheckpointWarning,
    load_latest,
    previous_path,
    read_checkpoint,
    save_checkpoint,
)

from .conftest import tiny_data

CONFIG = TrainConfig(model="mlp", epochs=3, batch_size=16, lr=0.05)
SPEC = parse_method("tsam:num_samples=2")


def _comparable(result):
    out = result.to_dict()
    for record in [out, *out["history"]]:
        record.pop("wall_time")  # the clocks are the only fields that may differ
        record.pop("cpu_time")
    return out


@pytest.fixture(scope="module")
def uninterrupted():
    return _comparable(train_run(SPEC, tiny_data(), CONFIG, 0, progress=False))


def _stop_after(tmp_path, epochs):
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(InterruptedError):
        train_run(SPEC, tiny_data(), CONFIG, 0, progress=False, checkpoint=checkpoint,
                  metrics=tmp_path / "metrics.jsonl", stop_after_epochs=epochs)  # fmt: skip
    return checkpoint


def _resume(checkpoint):
    return train_run(SPEC, tiny_data(), CONFIG, 0, progress=False, checkpoint=checkpoint,
                     metrics=checkpoint.parent / "metrics.jsonl")  # fmt: skip


def test_checkpoint_file_is_checksummed_and_the_previous_one_kept(tmp_path):
    checkpoint = _stop_after(tmp_path, 2)
    assert checkpoint.read_bytes().startswith(MAGIC)
    assert read_checkpoint(checkpoint)["epoch"] == 2
    assert read_checkpoint(previous_path(checkpoint))["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_a_crash_while_writing_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"epoch": 1}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(os, "replace", crash)  # dies after the temporary file is written
    with pytest.raises(OSError, match="injected"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path) == {"epoch": 1}
    assert not list(tmp_path.glob(".*.tmp")), "the failed write cleaned up after itself"
    assert load_latest(path)[0] == {"epoch": 1}  # a stray temporary file is never read


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty", "garbage"])
def test_damaged_checkpoint_falls_back_to_the_previous_one_and_ends_identically(
    tmp_path, uninterrupted, damage
):
    checkpoint = _stop_after(tmp_path, 2)
    raw = checkpoint.read_bytes()
    if damage == "truncate":
        checkpoint.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_byte":  # one bit in the tensor data: torch.load alone would not notice
        pos = len(raw) - 200
        checkpoint.write_bytes(raw[:pos] + bytes([raw[pos] ^ 1]) + raw[pos + 1 :])
    elif damage == "empty":
        checkpoint.write_bytes(b"")
    else:
        checkpoint.write_bytes(b"not a checkpoint at all")
    with pytest.warns(CheckpointWarning, match=rf"{checkpoint.name}.*Resuming from .*prev\.pt"):
        resumed = _resume(checkpoint)
    # Epoch 2 is trained again from the epoch-1 checkpoint: the run still ends the same.
    assert _comparable(resumed) == uninterrupted


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    checkpoint = _stop_after(tmp_path, 2)
    checkpoint.write_bytes(b"junk")
    previous_path(checkpoint).write_bytes(checkpoint.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*checkpoint\.pt.*delete"):
        _resume(checkpoint)


def test_metrics_without_a_checkpoint_are_not_overwritten(tmp_path):
    checkpoint = _stop_after(tmp_path, 2)
    checkpoint.unlink()
    previous_path(checkpoint).unlink()
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"metrics\.jsonl records 2 finished epoch"):
        _resume(checkpoint)
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    checkpoint = _stop_after(tmp_path, 1)
    other = TrainConfig(model="mlp", epochs=3, batch_size=16, lr=0.5)
    with pytest.raises(CheckpointError, match=r"different settings.*train"):
        train_run(SPEC, tiny_data(), other, 0, progress=False, checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match=r"different settings.*seed"):
        train_run(SPEC, tiny_data(), CONFIG, 1, progress=False, checkpoint=checkpoint)


def test_checkpoint_without_the_header_is_still_read(tmp_path):
    legacy = tmp_path / "old.pt"
    torch.save({"epoch": 7}, legacy)
    assert read_checkpoint(legacy) == {"epoch": 7}


def test_the_cli_reports_a_damaged_run_without_a_traceback(tmp_path, mnist_file, capsys):
    args = ["compare", "--dataset", "mnist", "--data-path", str(mnist_file), "--model", "mlp",
            "--epochs", "2", "--batch-size", "32", "--methods", "sam", "--out", str(tmp_path / "o"),
            "--no-progress"]  # fmt: skip
    from tiltedsam.experiments.compare import run_config
    from tiltedsam.experiments.configs import DataConfig

    data = DataConfig("mnist", str(mnist_file)).settings()
    config = TrainConfig(model="mlp", epochs=2, batch_size=32)
    run = run_config(parse_method("sam"), 0, data, config).directory(tmp_path / "o")
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(MAGIC + b"0" * 64 + b"\ntruncated")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: no usable checkpoint" in err and str(run / "checkpoint.pt") in err
    assert "checksum mismatch" in err
    # Deleting it, as the message says, starts the run from scratch.
    (run / "checkpoint.pt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        assert main(args) == 0


class _RunsCode:
    """Unpickling this calls ``os.system``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("with_header", [True, False])
def test_a_crafted_checkpoint_cannot_run_code(tmp_path, with_header):
    """Nothing read from a results directory is unpickled beyond tensors and plain values, even
    when its checksum is valid (the file was written by the attacker, header included)."""
    import io

    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    payload = {"epoch": 1, "model": _RunsCode(marker)}
    if with_header:
        save_checkpoint(payload, path)
    else:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="refused: loading other objects could run code"):
        read_checkpoint(path)
    assert not marker.exists()
