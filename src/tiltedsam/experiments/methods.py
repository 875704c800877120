"""Method specs: ``name[:key=value,...]``, e.g. ``tsam:tilt=20,delta=0.5``.

The name picks the optimizer from the registry; the options override its defaults below (the
settings of issue #3's MNIST-1D reference: s = 3, noise radius 1, ρ = 0.05).  The option ``lr``
overrides the run's shared learning rate for that method (``sam:lr=0.05/0.1`` in a sweep grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tiltedsam.optim import OPTIMIZERS

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "erm": {},
    "sam": {"rho": 0.05},
    "asam": {"rho": 0.5},
    # ESAM1 = SAM trained `budget` times as many epochs: with TSAM's default s = 3 (ascent,
    # 2s = 6 passes per step) against SAM's 2, budget 3 equalises forward/backward passes.
    "esam1": {"rho": 0.05, "budget": 3},
    "esam2": {"rhos": (0.025, 0.05, 0.1)},
    "pgn": {"rho": 0.05, "alpha": 0.5},
    "rsam": {"rho": 0.05, "sigma": 1e-3, "lam": 2.0},
    "tracesam": {"rho": 0.01, "lam": 1.0, "num_samples": 1},
    "frobsam": {"rho": 0.005, "lam": 0.005, "num_samples": 2},
    "detsam": {"rho": 1.0, "lam": 1.0, "num_samples": 1, "half_cube": 0.01},
    "tsam": {"tilt": 1.0, "num_samples": 3, "rho": 0.05, "noise_radius": 1.0, "sampler": "ascent"},
    # Naive TSAM (paper Fig. 8): uniform samples in the radius-1 ball, s = 6 (TSAM's 6 passes).
    "tsam-naive": {"tilt": 1.0, "num_samples": 6, "rho": 1.0},
    # Cheaper estimator (issue #8): s forward-only scores, one resampled forward+backward.
    "tsam-resample": {
        "tilt": 1.0,
        "num_samples": 2,
        "rho": 0.05,
        "noise_radius": 1.0,
        "ascent": "selected",
    },
}

# Methods that draw random perturbations: the run's seed also seeds their generator.
SEEDED = {"rsam", "tracesam", "frobsam", "detsam", "tsam", "tsam-naive", "tsam-resample"}


def expand_methods(methods: list[str]) -> list[str]:
    """``all`` stands for every registered method with its defaults."""
    out: list[str] = []
    for m in methods:
        out.extend(METHOD_DEFAULTS if m == "all" else [m])
    return out


def _parse_value(text: str) -> Any:
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
