"""PyTorch Lightning with manual optimization (extra: ``tiltedsam[lightning]``).

A perturbation optimizer needs a closure it can call several times, which is what Lightning's
manual optimization gives: ``self.optimizers().step(closure=closure)`` with a closure that calls
``self.manual_backward(loss)`` and returns the loss.  :func:`manual_step` writes that closure.

Example (in a ``LightningModule`` with ``self.automatic_optimization = False``)::

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = manual_step(self, lambda: F.cross_entropy(self(x), y))
        self.log("train_loss", loss)

    def configure_optimizers(self):
        return TSAM(self.parameters(), torch.optim.SGD, tilt=1.0, lr=0.1, model=self)

Lightning's gradient clipping is not applied in manual optimization; give the optimizer
``max_grad_norm=`` to clip the combined gradient.  Do not call ``zero_grad`` in the closure.
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


def manual_step(
    module: pl.LightningModule, compute_loss: Callable[[], Tensor], optimizer: Any = None
) -> Tensor:
    """One optimizer step of ``module``'s (first) optimizer; ``compute_loss()`` is called once per
    pass at the perturbed parameters and must build a fresh graph each time."""
    if module.automatic_optimization:
        raise RuntimeError(
            "manual_step needs manual optimization: set self.automatic_optimization = False "
            "in the LightningModule's __init__"
        )
    opt = optimizer if optimizer is not None else module.optimizers()
    if isinstance(opt, list):
        raise ValueError("the module has several optimizers: pass optimizer= explicitly")

    def closure() -> Tensor:
        loss = compute_loss()
        module.manual_backward(loss)
        return loss

    return opt.step(closure=closure)


__all__ = ["manual_step"]
