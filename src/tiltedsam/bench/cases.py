"""The bench's cases: a model, a method and s, each built into one timed training step.

A bench method is a method of the table (:data:`tiltedsam.optim.METHODS`, built by
:func:`~tiltedsam.optim.build_optimizer` with the harness defaults), one of :data:`VARIANTS`, or
``official`` (the official-semantics reference loop, :mod:`tiltedsam.bench.reference`).  A step
is ``zero_grad(set_to_none=True)`` then ``step(closure)`` for every method, ERM included.  The
bench's ``erm`` is the bare base optimizer (``torch.optim.SGD``), not the table's ``ERM``
wrapper: it is the floor every pass count is measured against, so it carries no wrapper cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tiltedsam.bench.reference import OfficialTSAMReference
from tiltedsam.models import create_model
from tiltedsam.optim import METHODS as optim_table
from tiltedsam.optim import MethodSpec, build_optimizer, method_info


def optim_methods() -> list[str]:
    return list(optim_table)


# name -> (input shape, default batch size)
BENCH_MODELS: dict[str, tuple[tuple[int, ...], int]] = {
    "mlp": ((1, 40), 64),
    "cnn1d": ((1, 40), 64),
    "resnet8": ((3, 32, 32), 32),
    "resnet18": ((3, 32, 32), 8),
}
# A bench method is a method of the table (tiltedsam.optim.METHODS, with the harness defaults),
# one of these variants of one, or "official" (the official-semantics reference loop).  "tsam" is
# always TSAM's sequential path, "batched" its vmap path; "resample" is tsam-resample.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tsam": ("tsam", {"batched": False}),
    "batched": ("tsam", {"batched": True}),
    "resample": ("tsam-resample", {}),
    "resample-shared": ("tsam-resample", {"ascent": "shared"}),
    "resample-none": ("tsam-resample", {"ascent": "none"}),
}
METHODS = ("erm", "sam", "tsam", "official", "resample")  # the default selection
BASE_KWARGS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}


def bench_methods() -> tuple[str, ...]:
    """Every name ``--methods`` takes: the table's methods, the variants and ``official``."""
    return tuple(dict.fromkeys([*optim_methods(), *VARIANTS, "official"]))


def takes_samples(method: str) -> bool:
    """The method runs at each s (it takes ``num_samples``; ``official`` does)."""
    name = VARIANTS.get(method, (method, {}))[0]
    return method == "official" or "num_samples" in method_info(name).options


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    s: int = 0  # 0 for erm and sam

    @property
    def label(self) -> str:
        return f"{self.method} s={self.s}" if self.s else self.method

    @property
    def forward_only(self) -> bool:
        """Some of its passes are forward only (tsam-resample's scoring): no pass floor."""
        name = VARIANTS.get(self.method, (self.method, {}))[0]
        return name != "official" and method_info(name).options >= {"ascent"}


@dataclass
class Built:
    step: Callable[[], Any]
    holders: list[Any] = field(default_factory=list)
    num_params: int = 0
    passes: int = 1  # closure calls of one step (tsam-resample: s of them forward only)


def build_case(
    case: Case,
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
) -> Built:
    """A model, a batch and the optimizer for ``case``; ``step()`` runs one training step."""
    shape, default_batch = BENCH_MODELS.get(case.model, ((1, 40), 64))
    batch = batch_size or default_batch
    torch.manual_seed(seed)
    if model_kwargs:
        from tiltedsam.models import MLP

        model = MLP(in_channels=shape[0], length=shape[-1], num_classes=10, **model_kwargs)
    else:
        model = create_model(case.model, shape, 10)
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def closure(backward: bool = True):
        loss = loss_fn(model(x), y)
        if backward:
            loss.backward()
        return loss

    params = list(model.parameters())
    num_params = sum(p.numel() for p in params)
    if case.method == "official":
        opt: Any = OfficialTSAMReference(model, torch.optim.SGD, tilt=1.0, num_samples=case.s,
                                         rho=0.05, radius=1.0, **BASE_KWARGS)  # fmt: skip
        passes = 2 * case.s
    elif case.method == "erm":  # the floor: the base optimizer alone
        opt = torch.optim.SGD(params, **BASE_KWARGS)
        passes = 1
    elif case.method in bench_methods():
        name, options = VARIANTS.get(case.method, (case.method, {}))
        if case.s:
            options = {**options, "num_samples": case.s}
        spec = MethodSpec(name, options, case.label)
        opt = build_optimizer(spec, params, base="sgd", base_kwargs=BASE_KWARGS, seed=seed,
                              model=model)  # fmt: skip
        passes = getattr(opt, "passes_per_step", 1)
        if case.method == "batched" or getattr(opt, "shards_per_step", 0):
            from tiltedsam.closures import make_closure

            closure = make_closure(model, loss_fn, x, y)  # type: ignore[assignment]
    else:
        raise ValueError(f"method must be one of {bench_methods()}, got {case.method!r}")

    if case.method == "official":

        def step() -> None:
            opt.zero_grad()
            opt.step(closure)
    else:

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            opt.step(closure)

    return Built(step=step, holders=[model, opt, x, y], num_params=num_params, passes=passes)


__all__ = [
    "BASE_KWARGS",
    "BENCH_MODELS",
    "METHODS",
    "VARIANTS",
    "Built",
    "Case",
    "bench_methods",
    "build_case",
    "takes_samples",
]
