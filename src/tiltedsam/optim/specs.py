"""Method specs, ``name[:key=value,...]`` (``tsam:tilt=20,delta=0.5``), and the one builder of the
harness, :func:`build_optimizer`.

A spec names a method of the table (:data:`~tiltedsam.optim.registry.METHODS`); its options
override the table's harness defaults (``MethodInfo.defaults``).  An option that is a keyword of
the base optimizer (``lr``, ``weight_decay``, ``momentum``, ...) overrides the run's shared
setting for that method (``sam:lr=0.05/0.1`` in a sweep grid); ``budget`` is the harness's own
(ESAM1's epoch multiplier).  A list value is written with ``/`` (``esam2:rhos=0.025/0.05/0.1``)
or in brackets (``esam2:rhos=[0.025/0.05/0.1]``, the form a sweep grid needs, where a bare ``/``
separates the values tried).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tiltedsam.optim.registry import (
    METHODS,
    base_class,
    base_keywords,
    canonical_name,
    method_info,
)


@dataclass(frozen=True)
class MethodSpec:
    """A method name with its options; ``label`` is how tables and plots name it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def kwargs(self) -> dict[str, Any]:
        """The table's harness defaults, overridden by the spec's options."""
        return {**METHODS[self.name].defaults, **self.options}


def _parse_value(text: str) -> Any:
    if text.startswith("[") and text.endswith("]"):  # a list, as a sweep grid writes it
        return tuple(_parse_value(part.strip()) for part in text[1:-1].split("/") if part.strip())
    if "/" in text:  # a list, e.g. rhos=0.025/0.05/0.1
        return tuple(_parse_value(part) for part in text.split("/"))
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("inf", "infinity"):
        return float("inf")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_method(spec: str) -> MethodSpec:
    """``"tsam:tilt=20,num_samples=5"`` → ``MethodSpec("tsam", {"tilt": 20, "num_samples": 5})``.

    The name is looked up as :func:`~tiltedsam.optim.registry.method_info` does (``TSAM``,
    ``tsam_resample``); the options are checked when the optimizer is built."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"method spec must be a non-empty string like 'tsam:tilt=5', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    info = method_info(name)
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"method option {item!r} in {spec!r} must look like key=value")
        options[key.strip()] = _parse_value(value.strip())
    return MethodSpec(info.name, options, spec.strip())


def expand_methods(methods: Iterable[str]) -> list[str]:
    """``all`` stands for every method of the table with its defaults."""
    out: list[str] = []
    for m in methods:
        out.extend(METHODS if m == "all" else [m])
    return out


def _as_spec(spec: MethodSpec | str) -> MethodSpec:
    return parse_method(spec) if isinstance(spec, str) else spec


def run_budget(spec: MethodSpec | str) -> int:
    """How many times the run's epochs the method trains (``budget``; 1 for most methods)."""
    spec = _as_spec(spec)
    if not METHODS[spec.name].budget:
        return 1
    budget = spec.kwargs().get("budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"{spec.label!r}: {spec.name} budget must be an int >= 1, got {budget!r}")
    return budget


def _check_number(spec: MethodSpec, key: str, value: Any, low_open: bool) -> float:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if bad or not (value > 0 if low_open else 0 <= value) or not math.isfinite(value):
        interval = "(0, inf)" if low_open else "[0, inf)"
        raise ValueError(
            f"{spec.label!r}: option {key} must be a number in {interval}, got {value!r}"
        )
    return float(value)


def build_optimizer(
    spec: MethodSpec | str,
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    *,
    base: str | type[torch.optim.Optimizer] = "sgd",
    base_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    total_steps: int | None = None,
    model: nn.Module | None = None,
) -> torch.optim.Optimizer:
    """The optimizer of ``spec`` around ``base``, as every harness command builds it.

    Options: the table's defaults under the spec's own.  Base-optimizer settings: ``base_kwargs``
    (the run's shared lr, momentum, weight decay; a key ``base`` does not take is dropped, e.g.
    momentum for AdamW) under the spec's options that are keywords of ``base``.  ``seed``,
    ``total_steps`` (a tilt schedule's length) and ``model`` (BatchNorm once per step) go to the
    methods that take them.  Errors name the spec (``'tsam:tilte=5': unknown option ...``).
    """
    spec = _as_spec(spec)
    info = method_info(spec.name)
    base_cls = base_class(base)
    run_budget(spec)  # a bad budget fails here, with the spec's name
    options = spec.kwargs()
    if info.budget:
        options.pop("budget")
    keywords = base_keywords(base_cls)
    shared = {k: v for k, v in (base_kwargs or {}).items() if k in keywords}
    shared.update({k: options.pop(k) for k in list(options) if k in keywords})
    if "lr" in shared:
        shared["lr"] = _check_number(spec, "lr", shared["lr"], low_open=True)
    if "weight_decay" in shared:
        shared["weight_decay"] = _check_number(spec, "weight_decay", shared["weight_decay"], False)
    for key, value, wanted in (("seed", seed, info.seeded), ("total_steps", total_steps,
                               info.scheduled), ("model", model, info.takes_model)):  # fmt: skip
        if value is not None and wanted:
            options.setdefault(key, value)
    try:
        return info.build(params, base_cls, **shared, **options)
    except ValueError as err:
        raise ValueError(f"{spec.label!r}: {err}") from None
    except TypeError as err:
        raise TypeError(f"{spec.label!r}: {err}") from None


def check_spec(spec: MethodSpec | str, base: str = "sgd", base_kwargs: Mapping | None = None):
    """Build ``spec``'s optimizer on a dummy parameter, so a bad option fails before training
    (with the spec's name, the option and the allowed ones)."""
    dummy = nn.Linear(1, 1)
    build_optimizer(spec, dummy.parameters(), base=base, base_kwargs=base_kwargs, seed=0,
                    total_steps=1, model=dummy)  # fmt: skip


__all__ = [
    "MethodSpec",
    "build_optimizer",
    "canonical_name",
    "check_spec",
    "expand_methods",
    "parse_method",
    "run_budget",
]
