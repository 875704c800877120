"""PyTorch internals without a public equivalent (checked against torch 2.13.0).

- ``GradScaler``'s scale *tensor* and growth tracker, and the two kernels ``GradScaler`` itself
  runs (``torch._amp_foreach_non_finite_check_and_unscale_``, ``torch._amp_update_scale_``): a
  perturbation step unscales the gradients of every pass and updates the scale once per step
  without a host synchronisation; the public ``get_scale()`` returns a Python float (a sync per
  pass) and ``unscale_``/``update`` allow one call per optimizer step.
- ``TorchDispatchMode`` (``torch.utils._python_dispatch``) and ``tree_leaves``
  (``torch.utils._pytree``): the CPU memory counter of ``tiltedsam bench`` sees every ATen op.
  The dispatch mode is documented in PyTorch's extending guide but lives in a private module.
- ``OptimizedModule`` (``torch._dynamo.eval_frame``): the batched path must recognise a
  ``torch.compile``-wrapped model (it cannot ``vmap`` it); there is no public type to test.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHECKED_WITH = "2.13.0"

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402


def grad_scaler_device(scaler: torch.amp.GradScaler) -> str:
    """The device type the scaler was created for (``"cpu"``, ``"cuda"``)."""
    return scaler._device


def grad_scaler_scale(scaler: torch.amp.GradScaler) -> Tensor | None:
    """The scale as a one-element tensor on its device; None before the first ``scale()``."""
    return scaler._scale


@torch.no_grad()
def unscale_grads_(grads: list[Tensor], found_inf: Tensor, inv_scale: Tensor) -> None:
    """Multiply ``grads`` (one dtype and device) by ``inv_scale`` in place; set ``found_inf``
    to 1 if any was inf/NaN (the kernel of ``GradScaler.unscale_``)."""
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)


@torch.no_grad()
def update_scale_(scaler: torch.amp.GradScaler, found_inf: Tensor) -> None:
    """Back the scale off (``found_inf`` > 0) or count towards growth, as ``update()`` does,
    and forget the per-optimizer records ``update()`` would clear."""
    torch._amp_update_scale_(
        scaler._scale,
        scaler._growth_tracker,
        found_inf,
        scaler.get_growth_factor(),
        scaler.get_backoff_factor(),
        scaler.get_growth_interval(),
    )
    scaler._per_optimizer_states.clear()


def is_compiled_module(model: object) -> bool:
    """Whether ``model`` is the wrapper ``torch.compile(module)`` returns."""
    import torch._dynamo.eval_frame as eval_frame

    return isinstance(model, eval_frame.OptimizedModule)


def self_check() -> list[str]:
    """Exercise every name above on tiny inputs; the list of what failed (empty if all work)."""
    problems: list[str] = []

    def attempt(name: str, fn) -> None:
        try:
            fn()
        except Exception as err:  # any failure is a broken internal
            problems.append(f"{name}: {type(err).__name__}: {err}")

    def scaler_roundtrip() -> None:
        scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)
        assert grad_scaler_device(scaler) == "cpu"
        assert grad_scaler_scale(scaler) is None
        scaler.scale(torch.ones(()))
        scale = grad_scaler_scale(scaler)
        assert isinstance(scale, Tensor) and float(scale) == 4.0
        grads, found = [torch.full((2,), 8.0)], torch.zeros(1)
        unscale_grads_(grads, found, scale.double().reciprocal().float())
        assert grads[0].tolist() == [2.0, 2.0] and float(found) == 0.0
        update_scale_(scaler, found)  # growth_interval 1: the scale doubles
        assert scaler.get_scale() == 8.0
        update_scale_(scaler, torch.ones(1))  # inf found: backs off by half
        assert scaler.get_scale() == 4.0

    def dispatch_mode() -> None:
        seen: list[str] = []

        class Recorder(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                seen.append(str(func))
                out = func(*args, **(kwargs or {}))
                assert all(isinstance(t, Tensor) for t in tree_leaves(out))
                return out

        with Recorder():
            torch.ones(2) + 1
        assert seen, "no op was dispatched to the mode"

    def compiled_type() -> None:
        module = torch.nn.Linear(1, 1)
        assert not is_compiled_module(module)
        assert is_compiled_module(torch.compile(module))

    attempt("GradScaler internals (_scale, _growth_tracker, _amp kernels)", scaler_roundtrip)
    attempt("torch.utils._python_dispatch.TorchDispatchMode / _pytree.tree_leaves", dispatch_mode)
    attempt("torch._dynamo.eval_frame.OptimizedModule", compiled_type)
    return problems
