"""Benchmarks of the optimizers' cost: ``tiltedsam bench`` (see :mod:`tiltedsam.bench.runner`),
the official-semantics reference step (:mod:`tiltedsam.bench.reference`) and peak-memory
measurement (:mod:`tiltedsam.bench.memory`).  Method and results: ``docs/performance.md``."""

from tiltedsam.bench.cases import BENCH_MODELS, METHODS, Case, build_case
from tiltedsam.bench.memory import LiveTensorBytes, cpu_peak_bytes, cuda_peak_bytes, tensors_of
from tiltedsam.bench.reference import OfficialTSAMReference
from tiltedsam.bench.runner import BenchResult, keep_heap, memory_rows, run_bench, time_cases
from tiltedsam.bench.scaling import plot_scaling, scaling_vs_params, scaling_vs_s
from tiltedsam.bench.tables import markdown, scaling_markdown

__all__ = [
    "BENCH_MODELS",
    "METHODS",
    "BenchResult",
    "Case",
    "LiveTensorBytes",
    "OfficialTSAMReference",
    "build_case",
    "cpu_peak_bytes",
    "cuda_peak_bytes",
    "keep_heap",
    "markdown",
    "memory_rows",
    "plot_scaling",
    "run_bench",
    "scaling_markdown",
    "scaling_vs_params",
    "scaling_vs_s",
    "tensors_of",
    "time_cases",
]
