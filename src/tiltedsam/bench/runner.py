"""``tiltedsam bench``: step time of TSAM against its pass floor, the official-semantics loop,
SAM and the cheaper estimator, measured side by side; peak memory against s; scaling plots.

Timing method: every (model, method, s) case gets its own copy of the model (same seed) and
the same batch; after a warm-up, the cases run one step each in turn, ``repeats`` rounds, the
order rotated every round, so that machine noise and drift hit all cases alike.  Each step is
timed by the wall clock and by the thread's CPU time (``time.thread_time``; with one intra-op
thread all the work runs on this thread, and CPU time does not count the time the process
waits for a core, which on a shared machine is most of the noise).  The tables give medians
and ratios of medians.  A step is ``zero_grad(set_to_none=True)`` then ``step(closure)`` for
every method, ERM (SGD) included.

Ratios reported per model and s:

* ``TSAM / (2s·ERM)``: our TSAM step (ascent sampler) against 2s ERM steps, 1.0 = no cost
  beyond the passes (ERM's own optimizer step is counted 2s times in the floor);
* ``TSAM / official``: against :class:`~tiltedsam.bench.reference.OfficialTSAMReference`;
* ``resample / SAM``: the cheaper estimator (``tsam-resample``) against SAM;
* ``batched / TSAM``: TSAM's batched ``vmap`` path (method ``batched``, same noise, same
  result) against the sequential one.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tiltedsam.bench.cases import (
    BENCH_MODELS,
    METHODS,
    Built,
    Case,
    bench_methods,
    build_case,
    takes_samples,
)
from tiltedsam.bench.memory import cpu_peak_bytes, cuda_peak_bytes


def keep_heap() -> bool:
    """Ask glibc's malloc to keep freed memory (no heap trimming, no ``mmap`` below 32 MB).

    With the defaults, glibc returns the top of the heap to the OS whenever enough of it is free
    and serves large blocks with fresh ``mmap`` calls, so the activations of every
    forward/backward pass are page-faulted in again.  How often that happens depends on the
    order of allocations, so it taxes multi-pass steps (SAM, TSAM, the official loop) more than
    ERM on the same model (10-20% on ResNet-8 on our machine; ``docs/performance.md``).  This
    is ``mallopt(M_MMAP_THRESHOLD, 32 MiB)``, ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`` and
    ``mallopt(M_TOP_PAD, 64 MiB)``, the same as the environment variables
    ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647
    MALLOC_TOP_PAD_=67108864``; it speeds up ERM too.  Returns False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = ((-3, 32 << 20), (-1, 2**31 - 1), (-2, 64 << 20))  # MMAP_THRESHOLD, TRIM, TOP_PAD
    return all(mallopt(key, value) == 1 for key, value in settings)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_cases(
    built: dict[Case, Built], *, repeats: int, warmup: int = 2, device: str = "cpu"
) -> dict[Case, dict[str, list[float]]]:
    """Round-robin timing (see the module docstring): per case, lists of wall and CPU seconds."""
    cases = list(built)
    for case in cases:
        for _ in range(warmup):
            built[case].step()
    _sync(device)
    times = {case: {"wall": [], "cpu": []} for case in cases}
    for r in range(repeats):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            built[case].step()
            _sync(device)
            times[case]["cpu"].append(time.thread_time() - cpu0)
            times[case]["wall"].append(time.perf_counter() - wall0)
    return times


def _cases(model: str, methods: Sequence[str], samples: Sequence[int]) -> list[Case]:
    """ERM first, then each method without s, then each method with s at every s."""
    single = [m for m in methods if m != "erm" and not takes_samples(m)]
    cases = [Case(model, "erm")] + [Case(model, m) for m in single]
    return cases + [Case(model, m, s) for s in samples for m in methods if takes_samples(m)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def typical(values: list[float], cyclic: bool = False) -> float:
    """A step's time: the median (robust to a stray slow round), or for a method whose steps
    differ by design (``tsam-intermittent``: a full step every k, fractional passes per step)
    the mean, which over whole cycles is the cost per step (a median would be the cheap step)."""
    if not cyclic:
        return median(values)
    return statistics.fmean(values) if values else float("nan")


def ratio_rows(model: str, times: dict[Case, dict[str, list[float]]], samples: Sequence[int]):
    """Per s: TSAM / (2s·ERM), TSAM / official, resample / SAM (wall and CPU medians)."""
    med = {case: {k: median(v) for k, v in t.items()} for case, t in times.items()}
    erm = med.get(Case(model, "erm"))
    sam = med.get(Case(model, "sam"))
    rows = []
    for s in samples:
        row: dict[str, Any] = {"model": model, "s": s}
        tsam = med.get(Case(model, "tsam", s))
        official = med.get(Case(model, "official", s))
        resample = med.get(Case(model, "resample", s))
        batched = med.get(Case(model, "batched", s))
        for clock in ("wall", "cpu"):
            if tsam and erm:
                row[f"tsam_over_floor_{clock}"] = tsam[clock] / (2 * s * erm[clock])
            if tsam and official:
                row[f"tsam_over_official_{clock}"] = tsam[clock] / official[clock]
            if resample and sam:
                row[f"resample_over_sam_{clock}"] = resample[clock] / sam[clock]
            if batched and tsam:
                row[f"batched_over_tsam_{clock}"] = batched[clock] / tsam[clock]
        rows.append(row)
    return rows


def memory_rows(
    model: str,
    samples: Sequence[int],
    methods: Sequence[str],
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    model_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Peak tensor memory of one (second) step per method and s, and its excess over ERM's,
    also in units of the parameters' bytes (``param_buffers``)."""
    rows = []
    cases = _cases(model, methods, samples)
    erm_peak = None
    for case in cases:
        built = build_case(case, batch_size=batch_size, device=device, model_kwargs=model_kwargs)
        built.step()  # allocate persistent state (momentum, θ buffer) first
        built.holders[0].zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            before, peak = cuda_peak_bytes(built.step, device)
        else:
            before, peak = cpu_peak_bytes(built.step, *built.holders)
        param_bytes = sum(p.numel() * p.element_size() for p in built.holders[0].parameters())
        if case.method == "erm":
            erm_peak = peak
        extra = peak - erm_peak if erm_peak is not None else float("nan")
        rows.append({
            "model": model, "method": case.method, "s": case.s, "label": case.label,
            "before_bytes": before, "peak_bytes": peak, "extra_over_erm_bytes": extra,
            "param_bytes": param_bytes, "param_buffers": extra / param_bytes,
        })  # fmt: skip
    return rows


@dataclass
class BenchResult:
    """Everything ``tiltedsam bench`` measured, with the setting it was measured in."""

    setting: dict[str, Any]
    timing: list[dict[str, Any]] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def run_bench(
    models: Sequence[str] = ("mlp", "cnn1d", "resnet8"),
    samples: Sequence[int] = (1, 3, 5),
    methods: Sequence[str] = METHODS,
    *,
    repeats: int = 30,
    warmup: int = 2,
    batch_sizes: dict[str, int] | None = None,
    threads: int | None = 1,
    device: str = "cpu",
    memory: bool = True,
    heap: str = "default",
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time every (model, method, s) case side by side per model; memory per model (optional).

    ``heap="kept"`` calls :func:`keep_heap` first (glibc's allocator stops trimming its heap)."""
    if heap not in ("default", "kept"):
        raise ValueError(f"heap must be 'default' or 'kept', got {heap!r}")
    if heap == "kept" and not keep_heap():
        raise ValueError("heap='kept' needs glibc's mallopt, which is not available here")
    unknown = set(methods) - set(bench_methods())
    if unknown:
        raise ValueError(f"methods must be among {bench_methods()}, got {sorted(unknown)}")
    unknown_models = set(models) - set(BENCH_MODELS)
    if unknown_models:
        raise ValueError(
            f"models must be among {tuple(BENCH_MODELS)}, got {sorted(unknown_models)}"
        )
    if threads:
        torch.set_num_threads(threads)
    result = BenchResult(setting={
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "device": device, "repeats": repeats,
        "warmup": warmup, "models": list(models), "samples": list(samples),
        "methods": list(methods), "batch_sizes": {}, "heap": heap,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
    })  # fmt: skip
    for model in models:
        batch = (batch_sizes or {}).get(model) or BENCH_MODELS[model][1]
        result.setting["batch_sizes"][model] = batch
        cases = _cases(model, methods, samples)
        built = {c: build_case(c, batch_size=batch, device=device) for c in cases}
        num_params = next(iter(built.values())).num_params
        passes = {c: b.passes for c, b in built.items()}
        if log:
            log(
                f"{model}: {num_params:,} parameters, batch {batch}, {len(cases)} cases x {repeats} rounds"
            )
        times = time_cases(built, repeats=repeats, warmup=warmup, device=device)
        del built
        erm = times[Case(model, "erm")]
        erm_med = {k: median(v) for k, v in erm.items()}
        for case, t in times.items():
            cyclic = float(passes[case]) != int(passes[case])
            wall, cpu = typical(t["wall"], cyclic), typical(t["cpu"], cyclic)
            floor = None if case.forward_only else passes[case]
            result.timing.append({
                "model": model, "params": num_params, "batch": batch, "method": case.method,
                "s": case.s, "passes": passes[case], "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu,
                "wall_over_floor": wall / (floor * erm_med["wall"]) if floor else None,
                "cpu_over_floor": cpu / (floor * erm_med["cpu"]) if floor else None,
            })  # fmt: skip
            result.raw[f"{model}/{case.label}"] = t
        result.ratios.extend(ratio_rows(model, times, samples))
        if memory:
            if log:
                log(f"{model}: peak memory per step")
            result.memory.extend(
                memory_rows(model, samples, methods, batch_size=batch, device=device)
            )
    return result


__all__ = [
    "BenchResult",
    "keep_heap",
    "median",
    "memory_rows",
    "ratio_rows",
    "run_bench",
    "time_cases",
]
