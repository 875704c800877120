"""Hugging Face ``transformers.Trainer`` with a tiltedsam optimizer (extra: ``tiltedsam[text]``).

The ``Trainer`` calls ``optimizer.step()`` without a closure after its own gradient clipping, so
:class:`PerturbationTrainer` splits the perturbation step in two: its ``training_step`` runs all
passes with :meth:`~tiltedsam.optim.PerturbationOptimizer.compute_gradient` (the combined
gradient is left in ``p.grad``, θ restored) and the Trainer's usual ``optimizer.step()`` applies
the base step.  So ``max_grad_norm`` (the Trainer's clipping, default 1.0) clips the combined
gradient, and the LR scheduler drives the base optimizer's param groups as usual.

Gradient accumulation over Trainer micro-steps is refused (each micro-step would get its own
perturbation); use a larger ``per_device_train_batch_size`` or accumulate inside a closure
(:func:`tiltedsam.make_closure`).  Mixed precision through the Trainer (``fp16``/``bf16``) is not
wired: its GradScaler lives in ``accelerate``; use fp32 or bf16 weights.

Example::

    opt = TSAM(model.parameters(), torch.optim.AdamW, tilt=1.0, num_samples=3, lr=5e-5)
    trainer = PerturbationTrainer(model=model, args=args, train_dataset=ds, optimizers=(opt, None))
    trainer.train()
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

try:
    from transformers import Trainer
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "tiltedsam.integrations.huggingface needs transformers and accelerate: "
        "pip install 'tiltedsam[text]'"
    ) from error

from tiltedsam.optim.base import PerturbationOptimizer


def _unwrap(optimizer: Any) -> Any:
    while not isinstance(optimizer, PerturbationOptimizer) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer  # accelerate's AcceleratedOptimizer
    return optimizer


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts, lists and tuples moved to ``device``; the rest unchanged.
    (The Trainer's own ``_prepare_inputs`` does this too, but is private.)"""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return type(value)({k: _to_device(v, device) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


class PerturbationTrainer(Trainer):
    """A ``transformers.Trainer`` that steps a tiltedsam perturbation optimizer.

    Pass the optimizer with ``optimizers=(opt, scheduler_or_None)``.  Any other optimizer
    falls back to the Trainer's own training step.
    """

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        optimizer = _unwrap(self.optimizer)
        if not isinstance(optimizer, PerturbationOptimizer):
            return super().training_step(model, inputs, num_items_in_batch)
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError(
                "PerturbationTrainer needs gradient_accumulation_steps=1 (got "
                f"{self.args.gradient_accumulation_steps}): each perturbation pass must see the "
                "whole batch; raise per_device_train_batch_size instead"
            )
        model.train()
        inputs = _to_device(inputs, self.args.device)

        def closure() -> torch.Tensor:
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            if self.args.n_gpu > 1:
                loss = loss.mean()
            self.accelerator.backward(loss)
            return loss

        return optimizer.compute_gradient(closure).detach()


__all__ = ["PerturbationTrainer"]
