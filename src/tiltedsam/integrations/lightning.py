"""PyTorch Lightning with manual optimization (extra: ``tiltedsam[lightning]``).

A perturbation optimizer needs a closure it can call several times, which is what Lightning's
manual optimization gives.  :func:`manual_step` runs one step: all the passes through
:meth:`~tiltedsam.optim.PerturbationOptimizer.compute_gradient` (each pass back-propagates with
``self.manual_backward``, so ``on_before_backward`` / ``on_after_backward`` fire once per
pass), then ``self.optimizers().step(...)``, which counts the step (``trainer.global_step``) and
fires ``on_before_optimizer_step`` **once per step**, with the combined gradient in ``p.grad``
(the one the base optimizer uses), as for a plain optimizer.

Example (in a ``LightningModule`` with ``self.automatic_optimization = False``)::

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = manual_step(self, lambda: F.cross_entropy(self(x), y))
        self.log("train_loss", loss)

    def configure_optimizers(self):
        return TSAM(self.parameters(), torch.optim.SGD, tilt=1.0, lr=0.1, model=self,
                    max_grad_norm=1.0)

Gradient clipping: Lightning refuses ``Trainer(gradient_clip_val=...)`` in manual optimization
(``MisconfigurationException: Automatic gradient clipping is not supported for manual
optimization``); give the optimizer ``max_grad_norm=`` instead, which clips the combined
gradient to that global L2 norm, as ``gradient_clip_val`` with the default ``"norm"``
algorithm would.  Likewise ``Trainer(accumulate_grad_batches=...)`` is refused: accumulate
inside ``compute_loss`` (each pass must see the whole batch).  Do not call ``zero_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "tiltedsam.integrations.lightning needs Lightning: pip install 'tiltedsam[lightning]'"
    ) from error

from tiltedsam.optim.base import PerturbationOptimizer


def manual_step(
    module: pl.LightningModule, compute_loss: Callable[[], Tensor], optimizer: Any = None
) -> Tensor:
    """One optimizer step of ``module``'s (first) optimizer; returns the step's value (TSAM:
    the tilted loss estimate; SAM: the loss at θ).

    ``compute_loss()`` is called once per pass at the perturbed parameters and must build a
    fresh graph each time.  ``tsam-resample``'s scoring passes run it without a backward (under
    ``torch.no_grad()``).  A step skipped by a non-finite policy is not passed to Lightning (it
    is not counted in ``trainer.global_step``)."""
    if module.automatic_optimization:
        raise RuntimeError(
            "manual_step needs manual optimization: set self.automatic_optimization = False "
            "in the LightningModule's __init__"
        )
    opt = optimizer if optimizer is not None else module.optimizers()
    if isinstance(opt, list):
        raise ValueError("the module has several optimizers: pass optimizer= explicitly")

    def closure(backward: bool = True) -> Tensor:
        loss = compute_loss()
        if backward:
            module.manual_backward(loss)
        return loss

    inner = getattr(opt, "optimizer", opt)  # LightningOptimizer wraps the optimizer
    if not isinstance(inner, PerturbationOptimizer):
        return opt.step(closure=closure)
    value = inner.compute_gradient(closure)
    if inner.last_step is not None and not inner.last_step.took_step:
        return value
    # Lightning calls this closure once, inside its hooks; the prepared gradient is applied.
    opt.step(closure=lambda: value)
    return value


__all__ = ["manual_step"]
