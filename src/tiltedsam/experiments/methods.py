"""Method specs: ``name[:key=value,...]``, e.g. ``tsam:tilt=20,delta=0.5``.

The name picks the optimizer from the registry; the options override its defaults below (the
settings of issue #3's MNIST-1D reference: s = 3, noise radius 1, ρ = 0.05).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tiltedsam.optim import OPTIMIZERS

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "erm": {},
    "sam": {"rho": 0.05},
    "asam": {"rho": 0.5},
    "tsam": {"tilt": 1.0, "num_samples": 3, "rho": 0.05, "noise_radius": 1.0, "sampler": "ascent"},
}


def _parse_value(text: str) -> Any:
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


@dataclass(frozen=True)
class MethodSpec:
    """An optimizer name with its options; ``label`` is how tables and plots name it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def kwargs(self) -> dict[str, Any]:
        return {**METHOD_DEFAULTS[self.name], **self.options}


def parse_method(spec: str) -> MethodSpec:
    """``"tsam:tilt=20,num_samples=5"`` → ``MethodSpec("tsam", {"tilt": 20, "num_samples": 5})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"method spec must be a non-empty string like 'tsam:tilt=5', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.lower()
    if name not in OPTIMIZERS:
        raise ValueError(
            f"unknown method {name!r} in {spec!r}; choose from {', '.join(OPTIMIZERS)}"
        )
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"method option {item!r} in {spec!r} must look like key=value")
        options[key.strip()] = _parse_value(value.strip())
    return MethodSpec(name, options, spec.strip())
