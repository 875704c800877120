"""Peak tensor memory of one optimizer step, on CPU and on CUDA.

On CPU there is no allocator statistic to read (``tracemalloc`` does not see torch's
allocations and RSS moves with glibc's heap trimming), so :class:`LiveTensorBytes` counts
tensor storages directly: a ``TorchDispatchMode`` sees every ATen op of the step (autograd's
backward included), registers each storage an op creates, and drops it when a weak reference
says it was freed.  The tensors that exist before the step and take part in it (parameters,
gradients, buffers, optimizer state, the batch) are registered up front with
:func:`tensors_of`, so the count is "bytes of tensor storage alive", and its maximum over the
step's ops is the peak.  Frees are noticed at the next op, so a peak is exact at op
granularity; memory an op uses internally and frees before returning is not seen.

On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` gives the peak
of the caching allocator's allocated bytes directly (:func:`cuda_peak_bytes`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef

from tiltedsam.compat.torch import TorchDispatchMode, tree_leaves


class LiveTensorBytes(TorchDispatchMode):
    """While active: ``current`` and ``peak`` bytes of live tensor storages (see module doc)."""

    def __init__(self, known: Iterable[Tensor] = ()) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        for t in known:
            self._register(t)
        self.start = self.current
        self.peak = self.current

    def _register(self, t: Tensor) -> None:
        if not isinstance(t, Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()  # unique among live storages (a freed one's may be reused)
        if key in self._live:
            ref, old = self._live[key]
            if not ref.expired():
                return
            self.current -= old
        size = storage.nbytes()
        self._live[key] = (StorageWeakRef(storage), size)
        self.current += size

    def _sweep(self) -> None:
        dead = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in dead:
            self.current -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self._register(t)
        self.peak = max(self.peak, self.current)
        return out


def tensors_of(*objects: Any) -> list[Tensor]:
    """Tensors held by modules (parameters, their gradients, buffers), optimizers (state,
    perturbation buffers, the official reference's copies), tensors and containers of them."""
    out: list[Tensor] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            out.append(obj)
            if obj.grad is not None:
                out.append(obj.grad)
        elif isinstance(obj, nn.Module):
            for t in [*obj.parameters(), *obj.buffers()]:
                visit(t)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                visit(state)
            for name in ("base_optimizer", "context", "_buffers", "_bn_snapshot"):
                visit(getattr(obj, name, None))
            for group in obj.param_groups:
                visit(group["params"])
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)
        elif hasattr(obj, "held_tensors"):
            visit(obj.held_tensors())
            visit(getattr(obj, "base_optimizer", None))
        elif type(obj).__module__.startswith("tiltedsam.optim."):
            visit(vars(obj))  # the step context and its policies: the persistent buffers

    for obj in objects:
        visit(obj)
    return out


def cpu_peak_bytes(step: Callable[[], Any], *holders: Any) -> tuple[int, int]:
    """(bytes alive before, peak bytes alive during) one call of ``step``, counting the
    tensors of ``holders`` (see :func:`tensors_of`) and everything the step allocates.

    Python's cyclic garbage collector is run before and disabled during the step: otherwise a
    collection that happens to fall inside the step frees cyclic garbage at a random op and
    the peak varies from run to run."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        with LiveTensorBytes(tensors_of(*holders)) as tracker:
            step()
    finally:
        if enabled:
            gc.enable()
    return tracker.start, tracker.peak


def cuda_peak_bytes(
    step: Callable[[], Any], device: torch.device | str = "cuda"
) -> tuple[int, int]:
    """(allocated bytes before, peak allocated bytes during) one call of ``step`` on CUDA."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return before, torch.cuda.max_memory_allocated(device)


def held_bytes(*holders: Any) -> int:
    """Bytes of the distinct storages behind ``tensors_of(*holders)``."""
    sizes: dict[int, int] = {}
    for t in tensors_of(*holders):
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(sizes.values())


__all__ = ["LiveTensorBytes", "cpu_peak_bytes", "cuda_peak_bytes", "held_bytes", "tensors_of"]
