"""Argument checks with errors that name the parameter and its allowed range."""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real

import torch


def _real(name: str, value: object) -> float:
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype.is_floating_point:
        value = value.item()  # a 0-dim tensor (a scheduler computing with tensors)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def check_nonnegative(name: str, value: object, *, allow_inf: bool = False) -> float:
    """A float in [0, inf) (or [0, inf] with ``allow_inf``)."""
    value = _real(name, value)
    upper = "inf]" if allow_inf else "inf)"
    if value < 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be in [0, {upper}, got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """A finite float > 0."""
    value = _real(name, value)
    if not (0 < value < math.inf):
        raise ValueError(f"{name} must be in (0, inf), got {value}")
    return value


def check_unit_interval(name: str, value: object) -> float:
    """A float in [0, 1]."""
    value = _real(name, value)
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_tilt(t: object) -> float:
    """The tilt t in [0, inf]; inf means the max (SAM limit)."""
    return check_nonnegative("tilt t", t, allow_inf=True)


def check_int_at_least(name: str, value: object, lower: int) -> int:
    """A Python int >= ``lower`` (a ``numpy.int64`` is refused, not converted: a config that kept
    it would key its runs by another value than the same config with an int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {lower}, got {type(value).__name__} {value!r}")
    if value < lower:
        raise ValueError(f"{name} must be an int >= {lower}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """True or False, nothing else: ``bool("False")`` is True, so a string from a config file
    would silently turn an option on."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """One of a fixed set of strings."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def check_optimizer_class(name: str, value: object) -> type[torch.optim.Optimizer]:
    """A torch.optim.Optimizer subclass (the class, not an instance)."""
    if isinstance(value, torch.optim.Optimizer):
        raise TypeError(
            f"{name} must be an optimizer class such as torch.optim.SGD, got an instance of "
            f"{type(value).__name__}; pass the class and give its arguments as keywords"
        )
    if not (isinstance(value, type) and issubclass(value, torch.optim.Optimizer)):
        raise TypeError(
            f"{name} must be a torch.optim.Optimizer subclass such as torch.optim.SGD, "
            f"got {value!r}"
        )
    return value
