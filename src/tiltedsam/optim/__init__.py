"""Optimizers, the method table and the builders.

* :data:`METHODS`: one :class:`MethodInfo` per method name (class, fixed keywords, the harness's
  defaults, what it takes); ``method_table()`` renders it for the docs.
* :func:`create_optimizer` ``(name, params, base=..., **options)``: a method around a base
  optimizer, the class's own defaults for what is not given.
* :func:`build_optimizer` ``(spec, params, ...)``: the harness's builder (``tsam:tilt=5``, the
  table's defaults, the run's seed, step count and model).
"""

from __future__ import annotations

from tiltedsam.optim.base import PerturbationOptimizer
from tiltedsam.optim.diagnostics import StepDiagnostics
from tiltedsam.optim.erm import ERM
from tiltedsam.optim.esam import ESAM2
from tiltedsam.optim.pgn import PGN
from tiltedsam.optim.registry import (
    BASE_OPTIMIZERS,
    METHODS,
    MethodInfo,
    UnknownOptionError,
    canonical_name,
    create_optimizer,
    method_info,
    method_table,
    register_method,
)
from tiltedsam.optim.rsam import RSAM
from tiltedsam.optim.sam import SAM
from tiltedsam.optim.specs import (
    MethodSpec,
    build_optimizer,
    check_spec,
    expand_methods,
    parse_method,
    run_budget,
)
from tiltedsam.optim.tsam import TSAM
from tiltedsam.optim.tsam_resample import TSAMResample
from tiltedsam.optim.universal import DetSAM, FrobSAM, TraceSAM

__all__ = [
    "BASE_OPTIMIZERS",
    "ERM",
    "ESAM2",
    "METHODS",
    "PGN",
    "RSAM",
    "SAM",
    "TSAM",
    "DetSAM",
    "FrobSAM",
    "MethodInfo",
    "MethodSpec",
    "PerturbationOptimizer",
    "StepDiagnostics",
    "TSAMResample",
    "TraceSAM",
    "UnknownOptionError",
    "build_optimizer",
    "canonical_name",
    "check_spec",
    "create_optimizer",
    "expand_methods",
    "method_info",
    "method_table",
    "parse_method",
    "register_method",
    "run_budget",
]
