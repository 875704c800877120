r"""Closures for ``opt.step(closure)`` with gradient accumulation and mixed precision.

A perturbation optimizer calls the closure once per pass and needs, each time, the gradient of
the *whole* batch at the current (perturbed) point: the ascent direction and the tilted weights
are computed from it.  So gradient accumulation lives inside the closure: the batch is split into
k micro-batches and each contributes :math:`\frac{n_i}{N}\nabla \ell_i` to ``p.grad``, which is
the gradient of the batch mean :math:`\frac1N\sum_i n_i \ell_i` for a ``loss_fn`` that averages
over its batch.  The optimizer clears the gradients before each pass, never the closure.

BatchNorm sees micro-batches of size n_i, not N: with BatchNorm the update is not the big-batch
one (as in plain PyTorch accumulation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam._validation import check_int_at_least

Closure = Callable[[], Tensor]


def _first_param_device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    return None


def _split(value: Any, bounds: Sequence[tuple[int, int]]) -> list[Any]:
    if isinstance(value, Tensor):
        return [value[a:b] for a, b in bounds]
    if isinstance(value, tuple | list):
        parts = [_split(v, bounds) for v in value]
        return [type(value)(p[i] for p in parts) for i in range(len(bounds))]
    if isinstance(value, dict):
        parts = {k: _split(v, bounds) for k, v in value.items()}
        return [{k: p[i] for k, p in parts.items()} for i in range(len(bounds))]
    raise TypeError(f"inputs must be a tensor or a tuple/list/dict of tensors, got {type(value)}")


def _devices(value: Any) -> set[torch.device]:
    if isinstance(value, Tensor):
        return {value.device}
    if isinstance(value, tuple | list):
        return set().union(*(_devices(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_devices(v) for v in value.values())) if value else set()
    return set()


def make_closure(
    model: nn.Module,
    loss_fn: Callable[[Any, Tensor], Tensor],
    inputs: Any,
    targets: Tensor,
    *,
    accumulation_steps: int = 1,
    autocast_dtype: torch.dtype | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> ModelClosure:
    """A closure computing ``loss_fn(model(inputs), targets)`` and its gradient.

    Args:
        model: the module (plain, compiled or wrapped in DDP; with DDP every micro-batch but the
            last runs under ``no_sync()``).
        loss_fn: a loss that averages over the batch, e.g. ``nn.CrossEntropyLoss()``.
        inputs: a tensor, or a tuple/list (``model(*inputs)``) or dict (``model(**inputs)``) of
            tensors, batch first.
        targets: batch-first targets.
        accumulation_steps: k >= 1 micro-batches (``torch.tensor_split`` sizes, so N need not
            be divisible by k); the gradient is that of the full-batch mean.
        autocast_dtype: e.g. ``torch.bfloat16``: forward and loss under ``torch.autocast``.
        grad_scaler: the same ``torch.amp.GradScaler`` given to the optimizer: the closure calls
            ``scaler.scale(loss).backward()`` and returns the unscaled loss.

    Returns a :class:`ModelClosure` (a callable) returning the detached full-batch loss.  It
    takes ``backward=True``: called as ``closure(backward=False)`` (what ``TSAMResample`` does
    for its scoring passes, under ``torch.no_grad()``) it runs the forward passes only, so a
    ``tsam-resample`` step with s scores costs s forward passes plus 2 forward+backward ones.
    """
    k = check_int_at_least("accumulation_steps", accumulation_steps, 1)
    total = len(targets)
    if total < k:
        raise ValueError(f"accumulation_steps must be in [1, {total}] (the batch size), got {k}")
    device = _first_param_device(model)
    data_devices = _devices(inputs) | {targets.device}
    if device is not None and any(d != device for d in data_devices):
        found = ", ".join(sorted(str(d) for d in data_devices))
        raise ValueError(
            f"the model's parameters are on {device} but inputs/targets are on {found}; "
            f"move them with .to({str(device)!r})"
        )
    return ModelClosure(model, loss_fn, inputs, targets, k, autocast_dtype, grad_scaler)


class ModelClosure:
    """The closure ``make_closure`` returns: callable like any closure, and it keeps what it
    was built from (``model``, ``loss_fn``, ``inputs``, ``targets`` and the options), so TSAM's
    batched path (:mod:`tiltedsam.optim.batched`) can evaluate the loss functionally."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Tensor], Tensor],
        inputs: Any,
        targets: Tensor,
        accumulation_steps: int,
        autocast_dtype: torch.dtype | None,
        grad_scaler: torch.amp.GradScaler | None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.inputs = inputs
        self.targets = targets
        self.accumulation_steps = accumulation_steps
        self.autocast_dtype = autocast_dtype
        self.grad_scaler = grad_scaler
        total, k = len(targets), accumulation_steps
        sizes = [len(part) for part in torch.tensor_split(torch.arange(total), k)]
        bounds, start = [], 0
        for size in sizes:
            bounds.append((start, start + size))
            start += size
        self._total = total
        self._micro = list(zip(_split(inputs, bounds), _split(targets, bounds), strict=True))
        self._device = _first_param_device(model)
        self._device_type = (self._device or torch.device("cpu")).type
        self._no_sync = getattr(model, "no_sync", None)

    @property
    def num_examples(self) -> int:
        """How many examples the closure's batch holds (a split-batch shard's weight)."""
        return self._total

    def shards(self, num_shards: int) -> list[ModelClosure]:
        """The batch cut into ``num_shards`` nearly equal contiguous shards, a closure each
        (same model, loss, autocast and scaler; each returns its shard's mean loss and knows
        its ``num_examples``).  A batch of fewer than ``num_shards`` examples gives one shard
        per example (a short last batch).  Gradient accumulation carries over: shard i is
        cut into about ``k·n_i/N`` micro-batches, so no pass is larger than the closure's.
        Split-batch estimators (``tsam-split``) evaluate one perturbation per shard."""
        check_int_at_least("num_shards", num_shards, 1)
        count = min(num_shards, self._total)
        sizes = [len(part) for part in torch.tensor_split(torch.arange(self._total), count)]
        bounds, start = [], 0
        for size in sizes:
            bounds.append((start, start + size))
            start += size
        k, shards = len(self._micro), []
        for x, y in zip(_split(self.inputs, bounds), _split(self.targets, bounds), strict=True):
            micro = min(len(y), -(-k * len(y) // self._total))  # ceil(k·n_i/N), at most n_i
            shards.append(ModelClosure(self.model, self.loss_fn, x, y, micro,
                                       self.autocast_dtype, self.grad_scaler))  # fmt: skip
        return shards

    def __call__(self, backward: bool = True) -> Tensor:
        """The full-batch loss; with ``backward`` (the default) its gradient is added to
        ``p.grad``, without it only the forward passes run (the protocol of
        ``TSAMResample``'s scoring passes, which call ``closure(backward=False)``)."""
        loss_sum = torch.zeros((), device=self._device)
        k = len(self._micro)
        for i, (x, y) in enumerate(self._micro):
            last = i == k - 1
            quiet = backward and not last and self._no_sync is not None
            with self._no_sync() if quiet else contextlib.nullcontext():  # type: ignore[misc]
                with self._autocast():
                    loss = self.loss_fn(call_model(self.model, x), y)
                    if loss.dtype not in (torch.float32, torch.float64):
                        loss = loss.float()  # half-precision losses are summed in float32
                    loss = loss * (len(y) / self._total)
                if backward:
                    scaled = self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss
                    scaled.backward()
            loss_sum = loss_sum + loss.detach()
        return loss_sum

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._device_type, dtype=self.autocast_dtype)


def call_model(model: Callable[..., Any], inputs: Any) -> Any:
    """``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple/list, else ``model(inputs)``."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


__all__ = ["ModelClosure", "call_model", "make_closure"]
