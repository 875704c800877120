"""The method table: one :class:`MethodInfo` per method name, and everything derived from it.

``create_optimizer(name, params, base=..., **options)`` builds a method around a base optimizer
(the library entry point); :func:`~tiltedsam.optim.specs.build_optimizer` builds one from a
harness spec (``tsam:tilt=5``) with the harness's defaults, seed and step count; the harness,
the report, the bench and the docs' method table read the same entries.  Adding a method is a
class plus one entry here (or :func:`register_method` for a method defined outside the package).

Names are looked up case-insensitively with ``_`` read as ``-`` (``"TSAM"``, ``"tsam_resample"``);
an unknown name or option is an error that names the method, lists what it takes and suggests
the closest spelling.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from tiltedsam.optim.base import PerturbationOptimizer
from tiltedsam.optim.erm import ERM
from tiltedsam.optim.esam import ESAM2
from tiltedsam.optim.pgn import PGN
from tiltedsam.optim.rsam import RSAM
from tiltedsam.optim.sam import SAM
from tiltedsam.optim.tsam import TSAM
from tiltedsam.optim.tsam_intermittent import TSAMIntermittent
from tiltedsam.optim.tsam_resample import TSAMResample
from tiltedsam.optim.tsam_split import TSAMSplit
from tiltedsam.optim.universal import DetSAM, FrobSAM, TraceSAM

BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

# Constructor parameters that are not options: the parameters, the base class and what a
# subclass hands its base class.
_NOT_OPTIONS = {"self", "params", "base_optimizer_cls", "defaults", "extra_defaults"}


class UnknownOptionError(TypeError, ValueError):
    """An option a method does not take (a ``TypeError`` like Python's own for an unexpected
    keyword, and a ``ValueError`` like every other bad option of the harness)."""


@dataclass(frozen=True)
class MethodInfo:
    """What the package knows about one method.

    Args:
        name: the registry name (lower case, ``-`` between words).
        cls: the optimizer class, or None for the bare base optimizer (a method registered
            that way takes only the base optimizer's keywords and keeps torch's loop contract:
            the caller zeroes the gradients).
        summary: the gradient handed to the base optimizer, one line of Markdown with
            ``\\(...\\)`` math (the docs' method table).
        passes: closure calls per step, as the docs write it (``2s``, ``1 + n``).
        page: the docs page of the method, relative to ``docs/methods/`` (``""``: none).
        fixed: keywords always passed to ``cls`` and not options (ASAM's ``adaptive=True``).
        defaults: the harness's settings (``tiltedsam compare``; issue #3's MNIST-1D reference).
            ``create_optimizer`` leaves them out: the class's own defaults apply there.
        budget: the method takes the harness option ``budget`` (an int >= 1): it trains for
            ``budget`` times the epochs (ESAM1: SAM at TSAM's pass budget).
    """

    name: str
    cls: type[torch.optim.Optimizer] | None
    summary: str = ""
    passes: str = ""
    page: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    budget: bool = False

    @cached_property
    def options(self) -> frozenset[str]:
        """The keywords the method takes besides the base optimizer's (from the signatures)."""
        if self.cls is None:
            return frozenset()
        names: set[str] = set()
        for klass in self.cls.__mro__:
            if klass is PerturbationOptimizer:
                names |= set(PerturbationOptimizer.SHARED_OPTIONS)
                break
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            parameters = inspect.signature(init).parameters.values()
            names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break
        return frozenset(names - _NOT_OPTIONS - set(self.fixed))

    @property
    def seeded(self) -> bool:
        """It draws random perturbations (takes ``seed``): a run's seed also seeds it."""
        return "seed" in self.options

    @property
    def scheduled(self) -> bool:
        """It takes ``total_steps`` (a tilt schedule needs the run's step count)."""
        return "total_steps" in self.options

    @property
    def takes_model(self) -> bool:
        """It takes ``model=`` (BatchNorm statistics updated once per step)."""
        return "model" in self.options

    def build(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base: type[torch.optim.Optimizer],
        **kwargs: Any,
    ) -> torch.optim.Optimizer:
        """The optimizer; ``kwargs`` are checked against ``options`` and the base's keywords."""
        check_options(self, base, kwargs)
        if self.cls is None:
            return base(params, **kwargs)
        return self.cls(params, base, **self.fixed, **kwargs)


# The built-in methods, in the order tables list them.  ``summary`` and ``passes`` feed the docs'
# method table (docs/methods/index.md); ``defaults`` are the harness's settings.
# fmt: off
_BUILTIN = (
    MethodInfo(
        "erm", ERM, passes="1",
        summary=r"\(g_0\) (the base optimizer's own update)",
    ),
    MethodInfo(
        "sam", SAM, passes="2", page="sam.md",
        summary=r"\(\nabla L(\theta + \rho\, g_0/\lVert g_0\rVert)\)",
        defaults={"rho": 0.05},
    ),
    MethodInfo(
        "asam", SAM, passes="2", page="sam.md#asam",
        summary=r"\(\nabla L(\theta + \rho\, T^2 g_0/\lVert T g_0\rVert)\), \(T = \lvert\theta\rvert\)",
        fixed={"adaptive": True},
        defaults={"rho": 0.5},  # ASAM's usual radius (the class defaults to SAM's 0.05)
    ),
    # ESAM1 = SAM trained `budget` times as many epochs: with TSAM's default s = 3 (ascent,
    # 2s = 6 passes per step) against SAM's 2, budget 3 equalises forward/backward passes.
    MethodInfo(
        "esam1", SAM, passes="2", page="esam.md#esam1-sam-at-tsams-budget",
        summary="SAM, trained `budget` × the epochs",
        defaults={"rho": 0.05, "budget": 3}, budget=True,
    ),
    MethodInfo(
        "esam2", ESAM2, passes=r"\(1 + K\)", page="esam.md#esam2-the-worst-of-several-radii",
        summary=r"\(\nabla L(\theta + \rho_{k^*} g_0/\lVert g_0\rVert)\), "
                r"\(k^* = \arg\max_k L(\theta + \rho_k g_0/\lVert g_0\rVert)\)",
        defaults={"rhos": (0.025, 0.05, 0.1)},
    ),
    MethodInfo(
        "pgn", PGN, passes="2", page="pgn.md",
        summary=r"\((1-\alpha)\, g_0 + \alpha\, \nabla L(\theta + r\, g_0/\lVert g_0\rVert)\)",
        defaults={"rho": 0.05, "alpha": 0.5},
    ),
    MethodInfo(
        "rsam", RSAM, passes="2", page="rsam.md",
        summary=r"\(\nabla L(\theta + \rho\, v/\lVert v\rVert)\), \(v = \lambda \nabla "
                r"L(\theta+\delta) + \delta\), \(\delta\) filter-wise Gaussian",
        defaults={"rho": 0.05, "sigma": 1e-3, "lam": 2.0},
    ),
    MethodInfo(
        "tracesam", TraceSAM, passes=r"\(1 + n\)", page="universal.md#trace-sam",
        summary=r"\(g_0 + \lambda\, \frac1n \sum_i (g_i - g_0)\), "
                r"\(\varepsilon_i \sim \mathcal N(0, \rho^2 I)\)",
        defaults={"rho": 0.01, "lam": 1.0, "num_samples": 1},
    ),
    MethodInfo(
        "frobsam", FrobSAM, passes=r"\(1 + n\)", page="universal.md#frob-sam",
        summary=r"\(g_0 + \frac{\lambda}{\rho^2} \operatorname{Cov}_i(L_i, g_i)\), "
                r"\(\varepsilon_i \sim \mathcal N(0, \rho^2 I)\)",
        defaults={"rho": 0.005, "lam": 0.005, "num_samples": 2},
    ),
    MethodInfo(
        "detsam", DetSAM, passes=r"\(1 + n\)", page="universal.md#det-sam",
        summary=r"\(g_0 + \lambda c^{-2} \sum_i \operatorname{softmax}(-d/2)_i (g_i - g_0)\)",
        defaults={"rho": 1.0, "lam": 1.0, "num_samples": 1, "half_cube": 0.01},
    ),
    MethodInfo(
        "tsam", TSAM, passes=r"\(2s\)", page="tsam.md",
        summary=r"\(\sum_j \operatorname{softmax}((1-\delta) t L)_j\, \nabla "
                r"L(\theta+\varepsilon_j)\), \(\varepsilon_j\) from the ascent sampler",
        defaults={"tilt": 1.0, "num_samples": 3, "rho": 0.05, "noise_radius": 1.0,
                  "sampler": "ascent"},
    ),
    # Naive TSAM (paper Fig. 8): uniform samples in the radius-1 ball, s = 6 (TSAM's 6 passes).
    MethodInfo(
        "tsam-naive", TSAM, passes=r"\(s\)", page="tsam.md#the-naive-sampler-tsam-naive",
        summary=r"the same weights, \(\varepsilon_j\) uniform in the \(\rho\)-ball (paper Fig. 8)",
        fixed={"sampler": "uniform"},
        defaults={"tilt": 1.0, "num_samples": 6, "rho": 1.0},
    ),
    # Cheaper estimator (issue #8): s forward-only scores, one resampled forward+backward.
    MethodInfo(
        "tsam-resample", TSAMResample, passes=r"\(s\) forward + 2", page="../performance.md",
        summary=r"\(s\) perturbations scored by forward passes only, one drawn with probability "
                r"\(\operatorname{softmax}(tL)_j\), the gradient there (issue #8's cheaper "
                "estimator)",
        defaults={"tilt": 1.0, "num_samples": 2, "rho": 0.05, "noise_radius": 1.0,
                  "ascent": "selected"},
    ),
    # TSAM at SAM's cost (issue #21): three cheaper estimators of the tilted gradient.
    MethodInfo(
        "tsam-split", TSAMSplit, passes=r"\(2s\) on shards (2 batches)", page="tsam-cheap.md",
        summary=r"\(\sum_j \operatorname{softmax}(tL_{B_j})_j\, \nabla L_{B_j}(\theta+"
                r"\varepsilon_j)\), shard \(B_j\) of the batch with its own \(\varepsilon_j\)",
        defaults={"tilt": 1.0, "num_samples": 3, "rho": 0.05, "noise_radius": 1.0},
    ),
    MethodInfo(
        "tsam-split-rise", TSAMSplit, passes=r"\(2s\) on shards (2 batches)",
        page="tsam-cheap.md#the-tilt-on-the-rise",
        summary=r"as tsam-split, weights of the rise \(L_{B_j}(\theta+\varepsilon_j) - "
                r"L_{B_j}(\theta+\xi_j)\)",
        fixed={"tilt_on": "rise"},
        defaults={"tilt": 1.0, "num_samples": 3, "rho": 0.05, "noise_radius": 1.0},
    ),
    MethodInfo(
        "tsam-stale", TSAMResample, passes=r"\(s\) forward + 1",
        page="tsam-cheap.md#stale-ascent-resampling",
        summary=r"tsam-resample with the last step's ascent direction (no fresh ascent pass)",
        fixed={"ascent": "stale"},
        defaults={"tilt": 1.0, "num_samples": 2, "rho": 0.05, "noise_radius": 1.0},
    ),
    MethodInfo(
        "tsam-intermittent", TSAMIntermittent, passes=r"\((2s + k)/k\)",
        page="tsam-cheap.md#intermittent-tsam",
        summary=r"TSAM every \(k\) steps; between, \(g + \alpha \lVert g\rVert v/\lVert v\rVert\) "
                r"with \(v\) the tilted gradient's part orthogonal to \(g\) (LookSAM)",
        defaults={"tilt": 1.0, "num_samples": 3, "rho": 0.05, "noise_radius": 1.0,
                  "every": 5, "alpha": 0.7},
    ),
)
# fmt: on

METHODS: dict[str, MethodInfo] = {info.name: info for info in _BUILTIN}
"""Every method by name, in table order (built-in ones first, then registered ones)."""


def register_method(info: MethodInfo) -> MethodInfo:
    """Add a method to the table (``create_optimizer``, the harness and the report then know it)."""
    if not isinstance(info, MethodInfo):
        raise TypeError(f"register_method takes a MethodInfo, got {type(info).__name__}")
    if info.name != canonical_name(info.name):
        raise ValueError(f"method names are lower case with '-', got {info.name!r}")
    if info.name in METHODS:
        raise ValueError(f"method {info.name!r} is already registered")
    if info.cls is not None and not issubclass(info.cls, torch.optim.Optimizer):
        raise TypeError(f"{info.name}: cls must be a torch.optim.Optimizer subclass")
    METHODS[info.name] = info
    return info


def canonical_name(name: str) -> str:
    """``"TSAM"`` → ``"tsam"``, ``"tsam_resample"`` → ``"tsam-resample"``."""
    return name.strip().lower().replace("_", "-")


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def method_info(name: str) -> MethodInfo:
    """The table entry of ``name`` (see :func:`canonical_name`); a clear error if there is none."""
    if not isinstance(name, str):
        raise TypeError(f"method name must be a string, got {type(name).__name__} {name!r}")
    info = METHODS.get(canonical_name(name))
    if info is None:
        raise ValueError(
            f"unknown method {name!r}: the method name must be one of {', '.join(METHODS)}"
            f"{_suggest(canonical_name(name), METHODS)}"
        )
    return info


def base_class(base: str | type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A base optimizer class from its name in :data:`BASE_OPTIMIZERS`, or the class itself."""
    if isinstance(base, str):
        if base.lower() not in BASE_OPTIMIZERS:
            raise ValueError(
                f"base must be one of {sorted(BASE_OPTIMIZERS)} or an optimizer class, got {base!r}"
            )
        return BASE_OPTIMIZERS[base.lower()]
    return base


def base_keywords(base: type[torch.optim.Optimizer]) -> frozenset[str]:
    """The keywords ``base(params, ...)`` takes (lr, momentum, weight_decay, ...)."""
    try:
        parameters = inspect.signature(base.__init__).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a C extension without a signature
        return frozenset()
    return frozenset(
        p.name for p in parameters
        if p.name not in ("self", "params") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )  # fmt: skip


def check_options(info: MethodInfo, base: type[torch.optim.Optimizer], kwargs: Mapping) -> None:
    """Every key of ``kwargs`` is an option of ``info`` or a keyword of ``base``; else an
    :class:`UnknownOptionError` naming the method, the option, what it takes and the closest."""
    if info.cls is None:
        shared = sorted(set(PerturbationOptimizer.SHARED_OPTIONS) & set(kwargs))
        if shared:
            raise TypeError(
                f"{info.name} is the bare base optimizer and does not take {shared}: use "
                "scaler.step(opt) / clip_grad_norm_ / DistributedDataParallel with it as usual"
            )
    fixed = sorted(set(info.fixed) & set(kwargs))
    if fixed:
        given = ", ".join(f"{k}={info.fixed[k]!r}" for k in fixed)
        raise UnknownOptionError(f"method {info.name} fixes {given}; it is not an option")
    keywords = base_keywords(base)
    if not keywords:  # a base optimizer whose signature cannot be read: it checks for itself
        return
    allowed = info.options | keywords
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise UnknownOptionError(
            f"unknown option {unknown[0]!r} for method {info.name}; its options are "
            f"{', '.join(sorted(allowed))} ({base.__name__}'s included)"
            f"{_suggest(unknown[0], allowed)}"
        )


def create_optimizer(
    name: str,
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    base: str | type[torch.optim.Optimizer] = "sgd",
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the method ``name`` (see :data:`METHODS`) around the base optimizer ``base``.

    ``kwargs`` hold the method's options and the base optimizer's (lr, momentum, ...); the
    class's own defaults apply to the rest.  Every method of the table, ``erm`` included, has
    one loop contract: ``step(closure)`` clears the gradients before each pass (the closure must
    not zero them), sets ``last_step`` and steps the base optimizer once.  An unknown name or
    option is an error naming the method, its options and the closest spelling.
    """
    return method_info(name).build(params, base_class(base), **kwargs)


def method_table() -> str:
    """The docs' method table (Markdown): name, rule, passes and the harness's defaults."""
    lines = ["| name | gradient handed to the base optimizer | passes | defaults in `tiltedsam "
             "compare` |", "|---|---|---|---|"]  # fmt: skip
    for info in METHODS.values():
        name = f"[`{info.name}`]({info.page})" if info.page else f"`{info.name}`"
        defaults = ", ".join(f"`{k}={_format(v)}`" for k, v in info.defaults.items())
        lines.append(f"| {name} | {info.summary} | {info.passes} | {defaults} |")
    return "\n".join(lines) + "\n"


def _format(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "/".join(_format(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = [
    "BASE_OPTIMIZERS",
    "METHODS",
    "MethodInfo",
    "UnknownOptionError",
    "base_class",
    "base_keywords",
    "canonical_name",
    "check_options",
    "create_optimizer",
    "method_info",
    "method_table",
    "register_method",
]
