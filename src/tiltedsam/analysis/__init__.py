"""Flatness, Hessian spectra, cross-evaluation, the 1-D toy figures and the GLM theorem check."""

from tiltedsam.analysis.cross_eval import cross_evaluate
from tiltedsam.analysis.flatness import FlatnessReport, noise_flatness
from tiltedsam.analysis.glm import glm_flatness_vs_tilt
from tiltedsam.analysis.hessian import (
    Spectrum,
    TraceEstimate,
    hessian_operator,
    hessian_vector_product,
    hutchinson_trace,
    top_eigenvalues,
)

__all__ = [
    "FlatnessReport",
    "Spectrum",
    "TraceEstimate",
    "cross_evaluate",
    "glm_flatness_vs_tilt",
    "hessian_operator",
    "hessian_vector_product",
    "hutchinson_trace",
    "noise_flatness",
    "top_eigenvalues",
]
