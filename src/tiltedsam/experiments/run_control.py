"""Where a run trains and how it is stopped early: the ``--device`` option and the
:class:`Stopped` signal of an ``on_epoch`` hook (:func:`~tiltedsam.experiments.train.train_run`)."""

from __future__ import annotations

import torch

from tiltedsam._validation import check_choice

DEVICES = ("auto", "cpu", "cuda")


class Stopped(Exception):
    """A run ended early by its ``on_epoch`` hook (adaptive search's pruner), after the
    epoch's checkpoint: asked again, the run resumes there.  ``history``: its epochs."""

    def __init__(self, history: list[dict[str, float]]) -> None:
        super().__init__(f"stopped after epoch {len(history)} by its on_epoch hook")
        self.history = history


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda`` (an error without CUDA)."""
    check_choice("device", device, DEVICES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' needs a CUDA GPU and a CUDA build of torch; none found "
                         "(use --device auto or cpu)")  # fmt: skip
    return torch.device(device)


__all__ = ["DEVICES", "Stopped", "resolve_device"]
