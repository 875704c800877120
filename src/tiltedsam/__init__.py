"""tiltedsam: Tilted Sharpness-Aware Minimization (TSAM) and SAM-family optimizers for PyTorch."""

from tiltedsam.optim import SAM, TSAM, PerturbationOptimizer, create_optimizer
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
    "SAM",
    "TSAM",
    "AscentSampler",
    "HMCSampler",
    "PerturbationOptimizer",
    "TiltSchedule",
    "TiltedAccumulator",
    "UniformSampler",
    "create_optimizer",
    "effective_sample_size",
    "t_sharpness",
    "tilted_gap",
    "tilted_mean",
    "tilted_objective",
    "tilted_variance",
    "tilted_weights",
]
