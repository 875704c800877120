"""tiltedsam: Tilted Sharpness-Aware Minimization (TSAM) and SAM-family optimizers for PyTorch."""

from tiltedsam.closures import make_closure
from tiltedsam.optim import (
    ERM,
    ESAM2,
    PGN,
    RSAM,
    SAM,
    TSAM,
    DetSAM,
    FrobSAM,
    PerturbationOptimizer,
    TraceSAM,
    TSAMResample,
    create_optimizer,
)
from tiltedsam.samplers import AscentSampler, HMCSampler, UniformSampler
from tiltedsam.schedules import TiltSchedule
from tiltedsam.tilt import (
    TiltedAccumulator,
    effective_sample_size,
    t_sharpness,
    tilted_gap,
    tilted_mean,
    tilted_objective,
    tilted_variance,
    tilted_weights,
)

__version__ = "0.1.0"

__all__ = [
    "ERM",
    "ESAM2",
    "PGN",
    "RSAM",
    "SAM",
    "TSAM",
    "AscentSampler",
    "DetSAM",
    "FrobSAM",
    "HMCSampler",
    "PerturbationOptimizer",
    "TSAMResample",
    "TiltSchedule",
    "TiltedAccumulator",
    "TraceSAM",
    "UniformSampler",
    "create_optimizer",
    "effective_sample_size",
    "make_closure",
    "t_sharpness",
    "tilted_gap",
    "tilted_mean",
    "tilted_objective",
    "tilted_variance",
    "tilted_weights",
]
