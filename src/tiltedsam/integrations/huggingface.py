"""Hugging Face ``transformers.Trainer`` with a tiltedsam optimizer (extra: ``tiltedsam[text]``).

The ``Trainer`` calls ``optimizer.step()`` without a closure after its own gradient clipping, so
:class:`PerturbationTrainer` splits the perturbation step in two: its ``training_step`` runs all
passes with :meth:`~tiltedsam.optim.PerturbationOptimizer.compute_gradient` (the combined
gradient is left in ``p.grad``, θ restored) and the Trainer's usual ``optimizer.step()`` applies
the base step.  So ``max_grad_norm`` (the Trainer's clipping, default 1.0) clips the combined
gradient, and the LR scheduler drives the base optimizer's param groups as usual.

Mixed precision: ``bf16=True`` works (every pass runs under the Trainer's bfloat16 autocast,
the weights and the combined gradient stay float32; tested against a plain loop under
``torch.autocast``).  ``fp16=True`` is refused when the Trainer is built: its loss scaling is
accelerate's GradScaler, which scales every pass's gradient while the optimizer combines them
unscaled (and skips a step only after the fact), so the update would be wrong for some
methods.  Use bf16, or fp32.

Gradient accumulation over Trainer micro-steps (``gradient_accumulation_steps > 1``) is refused
when the Trainer is built (each micro-step would get its own perturbation); use a larger
``per_device_train_batch_size`` or accumulate inside a closure (:func:`tiltedsam.make_closure`).

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
    (The Trainer does this too, in a method that is not public API.)"""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return type(value)({k: _to_device(v, device) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _check_args(args: Any) -> None:
    """The Trainer settings a perturbation optimizer cannot follow, refused with the remedy."""
    if args.gradient_accumulation_steps != 1:
        raise ValueError(
            "PerturbationTrainer needs gradient_accumulation_steps=1 (got "
            f"{args.gradient_accumulation_steps}): each perturbation pass must see the whole "
            "batch; raise per_device_train_batch_size instead, or accumulate inside the "
            "closure (tiltedsam.make_closure(..., accumulation_steps=k))"
        )
    if args.fp16:
        raise ValueError(
            "PerturbationTrainer does not support fp16=True: the Trainer's GradScaler would scale "
            "each pass's gradient while the optimizer combines them; use bf16=True (supported) "
            "or fp32"
        )


class PerturbationTrainer(Trainer):
    """A ``transformers.Trainer`` that steps a tiltedsam perturbation optimizer.

    Pass the optimizer with ``optimizers=(opt, scheduler_or_None)``.  Any other optimizer
    falls back to the Trainer's own training step.  ``gradient_accumulation_steps > 1`` and
    ``fp16=True`` are refused with a perturbation optimizer (``ValueError`` at construction).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(_unwrap(self.optimizer), PerturbationOptimizer):
            _check_args(self.args)

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        optimizer = _unwrap(self.optimizer)
        if not isinstance(optimizer, PerturbationOptimizer):
            return super().training_step(model, inputs, num_items_in_batch)
        _check_args(self.args)  # an optimizer created by the Trainer, or args changed since
        model.train()
        inputs = _to_device(inputs, self.args.device)

        def closure(
            backward: bool = True,
        ) -> torch.Tensor:  # backward=False: tsam-resample's scores
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            if self.args.n_gpu > 1:
                loss = loss.mean()
            if backward:
                self.accelerator.backward(loss)
            return loss

        return optimizer.compute_gradient(closure).detach()


__all__ = ["PerturbationTrainer"]
