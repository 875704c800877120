"""Mixed precision: a ``torch.amp.GradScaler`` driven by a perturbation optimizer.

``GradScaler.step(optimizer)`` does not accept closures, and a perturbation step needs the
*unscaled* gradient of every pass (the ascent direction and the tilted weights are computed from
it).  So the optimizer owns the scaler's step: after each pass it unscales the gradients in place
(the kernel ``GradScaler.unscale_`` uses) and records whether any was inf/NaN; at the end of the
step it skips the base step if anything was non-finite and updates the scale once (the kernel of
``GradScaler.update``), exactly as ``scaler.step(opt); scaler.update()`` would.  The scaler's
internals this needs are reached through :mod:`tiltedsam.compat.torch` only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tiltedsam.compat import torch as torch_compat


def check_grad_scaler(scaler: object, device: torch.device | None) -> torch.amp.GradScaler | None:
    """``scaler`` must be a ``torch.amp.GradScaler`` (or None) for the parameters' device type."""
    if scaler is None:
        return None
    if not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(
            f"grad_scaler must be a torch.amp.GradScaler or None, got {type(scaler).__name__}"
        )
    scaler_device = torch_compat.grad_scaler_device(scaler)
    if device is not None and scaler.is_enabled() and scaler_device != device.type:
        raise ValueError(
            f"grad_scaler is for device {scaler_device!r} but the parameters are on "
            f"{device.type!r}; create it with torch.amp.GradScaler({device.type!r})"
        )
    return scaler


class ScalerStep:
    """The scaler's part of one optimizer step: unscale each pass, update once at the end."""

    def __init__(self, scaler: torch.amp.GradScaler | None) -> None:
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.found_inf: Tensor | None = None

    @property
    def active(self) -> bool:
        return self.scaler is not None

    def begin(self) -> None:
        self.found_inf = None

    @torch.no_grad()
    def unscale_(self, grads: list[Tensor]) -> None:
        """Divide ``grads`` by the current scale in place and remember any inf/NaN."""
        scaler = self.scaler
        if scaler is None or not grads:
            return
        scale = torch_compat.grad_scaler_scale(scaler)
        if scale is None:
            raise RuntimeError(
                "grad_scaler was never used to scale a loss: in the closure call "
                "scaler.scale(loss).backward() and return the unscaled loss"
            )
        found = torch.zeros(1, dtype=torch.float32, device=grads[0].device)
        inv_scale = scale.double().reciprocal().float().to(grads[0].device)
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for same in by_dtype.values():
            torch_compat.unscale_grads_(same, found, inv_scale)
        self.found_inf = found if self.found_inf is None else self.found_inf + found

    @torch.no_grad()
    def update(self, nonfinite: Tensor) -> None:
        """Back off (``nonfinite`` > 0) or grow the scale, once per optimizer step."""
        scaler = self.scaler
        scale = None if scaler is None else torch_compat.grad_scaler_scale(scaler)
        if scale is None:
            return
        found = nonfinite.reshape(1).to(dtype=torch.float32, device=scale.device)
        torch_compat.update_scale_(scaler, found)
