r"""A reference TSAM step with the official implementation's semantics, for side-by-side timing.

What litian96/TSAM does per step (``tsam.py`` with the ``random1`` sampler of
``image/train_tsam.py``), restated here in our words; nothing of that code is copied:

for each of the s samples

1. BatchNorm running statistics on (their momentum restored);
2. for every parameter: keep a fresh copy of θ (``clone``), draw N(0, 1) noise of its shape,
   and add that tensor's squared noise norm to a running sum **read on the host** (one
   ``.item()``, i.e. a device synchronisation, per parameter tensor);
   then scale all noise by min(‖n‖, r)/‖n‖ and add it to the parameters; clear the gradients;
3. forward + backward at θ + ξ;
4. ascent: p += ρ · g/(‖g‖ + 1e-12) (global norm over the per-tensor norms); clear gradients;
5. BatchNorm running statistics off (momentum 0), forward + backward at θ + ξ + ρ ĝ;
6. put θ back by rebinding each parameter's data to the saved copy;
7. store a **copy** of every gradient (one dict of s clones per step in total) and the loss
   read on the host (``.item()``); clear the gradients;

then weights softmax(t·L) computed on the CPU from the s host floats, a zero tensor per
parameter into which the s stored gradients are added with their weights, those become
``p.grad``, and the base optimizer steps.  Extra memory therefore grows with s (s stored
gradients, plus θ's copy, the noise and the sum); there are about s·(#tensors + 1)
host synchronisations per step.  The official code also prints the losses and weights every
step; that I/O is left out.

``OfficialTSAMReference.step(closure)`` takes the same closure as our optimizers (computes the
loss, calls ``backward``, returns the loss).  With ``generator=`` the noise is drawn from it in
parameter order (the official code uses the global RNG), so that on a model without BatchNorm a
step equals ``TSAM(..., delta=0, noise="gaussian", bn_update="every")`` with the same seed up to
rounding (``tests/test_performance.py`` checks it): the two differ in cost, not in what they
compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._norm_layers import BATCH_NORM_LAYERS


def _bn_modules(model: nn.Module | None) -> list[nn.Module]:
    if model is None:
        return []
    return [m for m in model.modules() if isinstance(m, BATCH_NORM_LAYERS)]


class OfficialTSAMReference:
    """One official-semantics TSAM step per ``step(closure)`` (see the module docstring).

    Args:
        model: the module (its ``named_parameters`` and BatchNorm layers are used).
        base_optimizer_cls: e.g. ``torch.optim.SGD``; ``base_kwargs`` go to it.
        tilt, num_samples, rho, radius: t, s, ρ and the noise radius r.
        generator: optional ``torch.Generator`` for the noise (default: the global RNG).
    """

    def __init__(
        self,
        model: nn.Module,
        base_optimizer_cls: type[torch.optim.Optimizer],
        *,
        tilt: float = 1.0,
        num_samples: int = 3,
        rho: float = 0.05,
        radius: float = 1.0,
        generator: torch.Generator | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.model = model
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.base_optimizer = base_optimizer_cls(self.params, **base_kwargs)
        self.tilt = float(tilt)
        self.num_samples = int(num_samples)
        self.rho = float(rho)
        self.radius = float(radius)
        self.generator = generator
        self.state: dict[Tensor, dict[str, Tensor]] = {p: {} for p in self.params}
        self._bn = _bn_modules(model)
        self.passes_per_step = 2 * self.num_samples

    # -- the official helpers, one by one ---------------------------------------------------
    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _running_stats(self, on: bool) -> None:
        for m in self._bn:
            if on:
                if hasattr(m, "_reference_momentum"):
                    m.momentum = m._reference_momentum
            else:
                m._reference_momentum = m.momentum
                m.momentum = 0

    @torch.no_grad()
    def _add_noise(self) -> None:
        noise: dict[Tensor, Tensor] = {}
        sum_sq = 0.0
        for p in self.params:
            self.state[p]["old_p"] = p.data.clone()
            if self.generator is None:
                n = torch.randn_like(p.data)
            else:
                n = torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device)
            noise[p] = n
            sum_sq += n.norm(2).item() ** 2  # one host read per tensor, as in the original
        norm = sum_sq**0.5
        clip = min(norm, self.radius)
        for p in self.params:
            p.add_(noise[p] * clip / norm)
        self.zero_grad()

    @torch.no_grad()
    def _ascend(self) -> None:
        device = self.params[0].device
        grad_norm = torch.norm(
            torch.stack([p.grad.norm(p=2).to(device) for p in self.params if p.grad is not None]),
            p=2,
        )
        scale = self.rho / (grad_norm + 1e-12)
        for p in self.params:
            if p.grad is None:
                continue
            p.add_(p.grad * scale.to(p))
        self.zero_grad()

    @torch.no_grad()
    def _set_old_theta(self) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            p.data = self.state[p]["old_p"]

    @torch.no_grad()
    def _tilted_aggregation(self, losses: list[float], grads: list[dict[str, Tensor]]) -> None:
        values = torch.tensor(losses, dtype=torch.float32)
        top = torch.max(values)
        if math.isinf(self.tilt):
            weights = (values == top).float() / (values == top).float().sum()
        else:
            weights = torch.exp(self.tilt * (values - top))
            weights = weights / weights.sum()
        combined = {name: torch.zeros_like(p) for name, p in self.named}
        for name, p in self.named:
            for i, grad in enumerate(grads):
                combined[name].add_(grad[name] * weights[i])
            p.grad = combined[name]
        self.base_optimizer.step()

    # -- one step ---------------------------------------------------------------------------
    def step(self, closure: Callable[[], Tensor]) -> None:
        """s samples as in the module docstring, then the aggregation and one base step."""
        losses: list[float] = []
        grads: list[dict[str, Tensor]] = []
        for _ in range(self.num_samples):
            self._running_stats(True)
            self._add_noise()
            with torch.enable_grad():
                closure()
            self._ascend()
            self._running_stats(False)
            with torch.enable_grad():
                loss = closure()
            self._set_old_theta()
            grads.append({name: p.grad.clone() for name, p in self.named if p.grad is not None})
            losses.append(loss.mean().item())
            self.zero_grad()
        self._running_stats(True)  # (the original leaves them off until the next step)
        self._tilted_aggregation(losses, grads)

    def held_tensors(self) -> list[Tensor]:
        """Tensors this object keeps between steps (θ's copies and the base optimizer's state)."""
        out = [s["old_p"] for s in self.state.values() if "old_p" in s]
        for state in self.base_optimizer.state.values():
            out.extend(v for v in state.values() if isinstance(v, Tensor))
        return out


__all__ = ["OfficialTSAMReference"]
