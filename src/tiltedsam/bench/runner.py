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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tiltedsam._files import save_figure
from tiltedsam.bench.memory import cpu_peak_bytes, cuda_peak_bytes
from tiltedsam.bench.reference import OfficialTSAMReference
from tiltedsam.models import create_model
from tiltedsam.optim import METHODS as optim_table
from tiltedsam.optim import MethodSpec, build_optimizer, method_info


def optim_methods() -> list[str]:
    return list(optim_table)


# name -> (input shape, default batch size)
BENCH_MODELS: dict[str, tuple[tuple[int, ...], int]] = {
    "mlp": ((1, 40), 64),
    "cnn1d": ((1, 40), 64),
    "resnet8": ((3, 32, 32), 32),
    "resnet18": ((3, 32, 32), 8),
}
# A bench method is a method of the table (tiltedsam.optim.METHODS, with the harness defaults),
# one of these variants of one, or "official" (the official-semantics reference loop).  "tsam" is
# always TSAM's sequential path, "batched" its vmap path; "resample" is tsam-resample.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tsam": ("tsam", {"batched": False}),
    "batched": ("tsam", {"batched": True}),
    "resample": ("tsam-resample", {}),
    "resample-shared": ("tsam-resample", {"ascent": "shared"}),
    "resample-none": ("tsam-resample", {"ascent": "none"}),
}
METHODS = ("erm", "sam", "tsam", "official", "resample")  # the default selection
BASE_KWARGS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}


def bench_methods() -> tuple[str, ...]:
    """Every name ``--methods`` takes: the table's methods, the variants and ``official``."""
    return tuple(dict.fromkeys([*optim_methods(), *VARIANTS, "official"]))


def takes_samples(method: str) -> bool:
    """The method runs at each s (it takes ``num_samples``; ``official`` does)."""
    name = VARIANTS.get(method, (method, {}))[0]
    return method == "official" or "num_samples" in method_info(name).options


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    s: int = 0  # 0 for erm and sam

    @property
    def label(self) -> str:
        return f"{self.method} s={self.s}" if self.s else self.method

    @property
    def forward_only(self) -> bool:
        """Some of its passes are forward only (tsam-resample's scoring): no pass floor."""
        return VARIANTS.get(self.method, (self.method, {}))[0] == "tsam-resample"


@dataclass
class Built:
    step: Callable[[], Any]
    holders: list[Any] = field(default_factory=list)
    num_params: int = 0
    passes: int = 1  # closure calls of one step (tsam-resample: s of them forward only)


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


def build_case(
    case: Case,
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
) -> Built:
    """A model, a batch and the optimizer for ``case``; ``step()`` runs one training step."""
    shape, default_batch = BENCH_MODELS.get(case.model, ((1, 40), 64))
    batch = batch_size or default_batch
    torch.manual_seed(seed)
    if model_kwargs:
        from tiltedsam.models import MLP

        model = MLP(in_channels=shape[0], length=shape[-1], num_classes=10, **model_kwargs)
    else:
        model = create_model(case.model, shape, 10)
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def closure(backward: bool = True):
        loss = loss_fn(model(x), y)
        if backward:
            loss.backward()
        return loss

    params = list(model.parameters())
    num_params = sum(p.numel() for p in params)
    if case.method == "official":
        opt: Any = OfficialTSAMReference(model, torch.optim.SGD, tilt=1.0, num_samples=case.s,
                                         rho=0.05, radius=1.0, **BASE_KWARGS)  # fmt: skip
        passes = 2 * case.s
    elif case.method in bench_methods():
        name, options = VARIANTS.get(case.method, (case.method, {}))
        if case.s:
            options = {**options, "num_samples": case.s}
        spec = MethodSpec(name, options, case.label)
        opt = build_optimizer(spec, params, base="sgd", base_kwargs=BASE_KWARGS, seed=seed,
                              model=model)  # fmt: skip
        passes = getattr(opt, "passes_per_step", 1)
        if case.method == "batched":
            from tiltedsam.closures import make_closure

            closure = make_closure(model, loss_fn, x, y)  # type: ignore[assignment]
    else:
        raise ValueError(f"method must be one of {bench_methods()}, got {case.method!r}")

    if case.method == "official":

        def step() -> None:
            opt.zero_grad()
            opt.step(closure)
    else:

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            opt.step(closure)

    return Built(step=step, holders=[model, opt, x, y], num_params=num_params, passes=passes)


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


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio_rows(model: str, times: dict[Case, dict[str, list[float]]], samples: Sequence[int]):
    """Per s: TSAM / (2s·ERM), TSAM / official, resample / SAM (wall and CPU medians)."""
    med = {case: {k: _median(v) for k, v in t.items()} for case, t in times.items()}
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
        erm_med = {k: _median(v) for k, v in erm.items()}
        for case, t in times.items():
            wall, cpu = _median(t["wall"]), _median(t["cpu"])
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


# ---------------------------------------------------------------------- tables
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(result: BenchResult) -> str:
    """The three tables (ratios, step times, memory) as Markdown, with the setting on top."""
    st = result.setting
    setting = (
        f"torch {st['torch']}, {st['device']}"
        + (f" ({st['device_name']})" if st.get("device_name") else "")
        + f", {st['threads']} thread(s), median of {st['repeats']} interleaved rounds, "
        + ("glibc heap kept (--keep-heap)" if st.get("heap") == "kept" else "default allocator")
        + "; batch "
        + ", ".join(f"{m} {b}" for m, b in st["batch_sizes"].items())
        + "."
    )
    names = ("tsam_over_floor", "tsam_over_official", "resample_over_sam", "batched_over_tsam")
    titles = ("TSAM / (2s·ERM)", "TSAM / official", "resample / SAM", "batched / TSAM")
    lines = [setting, ""]
    lines += _table(
        [
            "model",
            "s",
            *(f"{t} {c}" if c == "wall" else c for t in titles for c in ("wall", "cpu")),
        ],
        (
            [
                r["model"],
                str(r["s"]),
                *(_fmt(r.get(f"{n}_{c}")) for n in names for c in ("wall", "cpu")),
            ]
            for r in result.ratios
        ),
    )

    def passes(r: dict[str, Any]) -> str:
        if Case(r["model"], r["method"], r["s"]).forward_only:
            return f"{r['s']} fwd + {r['passes'] - r['s']}"
        return str(r["passes"])

    lines.append("")
    lines += _table(
        ["model", "params", "method", "s", "passes", "wall ms", "cpu ms", "wall / (passes·ERM)",
         "cpu / (passes·ERM)"],
        (
            [r["model"], f"{r['params']:,}", r["method"], str(r["s"] or ""), passes(r),
             f"{r['wall_ms']:.2f}", f"{r['cpu_ms']:.2f}", _fmt(r["wall_over_floor"]),
             _fmt(r["cpu_over_floor"])]
            for r in result.timing
        ),
    )  # fmt: skip
    if result.memory:
        lines.append("")
        lines += _table(
            ["model", "method", "s", "peak MB", "extra over ERM (MB)", "extra / parameter bytes"],
            (
                [r["model"], r["method"], str(r["s"] or ""), f"{r['peak_bytes'] / 2**20:.2f}",
                 f"{r['extra_over_erm_bytes'] / 2**20:.2f}", f"{r['param_buffers']:.2f}"]
                for r in result.memory
            ),
        )  # fmt: skip
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- scaling
def scaling_vs_s(
    model: str = "cnn1d",
    samples: Sequence[int] = (1, 2, 3, 4, 5, 6, 8),
    *,
    repeats: int = 20,
    batch_size: int | None = None,
    methods: Sequence[str] = ("tsam", "official"),
    device: str = "cpu",
) -> dict[str, Any]:
    """Median step time (wall and CPU) against s for ``methods``, with ERM for the 2s line."""
    cases = [Case(model, "erm")] + [Case(model, m, s) for s in samples for m in methods]
    built = {c: build_case(c, batch_size=batch_size, device=device) for c in cases}
    times = time_cases(built, repeats=repeats, device=device)
    out: dict[str, Any] = {"model": model, "samples": list(samples), "erm": {}, "methods": {}}
    out["erm"] = {k: _median(v) for k, v in times[Case(model, "erm")].items()}
    for m in methods:
        out["methods"][m] = {
            clock: [_median(times[Case(model, m, s)][clock]) for s in samples]
            for clock in ("wall", "cpu")
        }
    return out


def scaling_vs_params(
    widths: Sequence[int] = (32, 128, 512, 1024, 2048),
    s: int = 3,
    *,
    repeats: int = 20,
    batch_size: int = 64,
    methods: Sequence[str] = ("tsam", "official"),
    device: str = "cpu",
) -> dict[str, Any]:
    """Step time / (2s·ERM) against the parameter count of an MLP of growing width."""
    out: dict[str, Any] = {"s": s, "widths": list(widths), "params": [], "methods": {}}
    for m in methods:
        out["methods"][m] = {"wall": [], "cpu": []}
    for width in widths:
        kw = {"hidden": width}
        cases = [Case(f"mlp{width}", "erm")] + [Case(f"mlp{width}", m, s) for m in methods]
        built = {c: build_case(c, batch_size=batch_size, device=device, model_kwargs=kw)
                 for c in cases}  # fmt: skip
        out["params"].append(next(iter(built.values())).num_params)
        times = time_cases(built, repeats=repeats, device=device)
        erm = {k: _median(v) for k, v in times[cases[0]].items()}
        for case in cases[1:]:
            for clock in ("wall", "cpu"):
                value = _median(times[case][clock]) / (2 * s * erm[clock])
                out["methods"][case.method][clock].append(value)
    return out


def scaling_markdown(vs_s: dict[str, Any] | None, vs_params: dict[str, Any] | None) -> str:
    """The scaling measurements as Markdown tables (CPU-time medians)."""
    lines: list[str] = []
    if vs_s is not None:
        methods = list(vs_s["methods"])
        erm = vs_s["erm"]["cpu"]
        lines += [f"{vs_s['model']}: step time (ms, CPU) against s", ""]
        lines += _table(
            ["s", "ideal 2s·ERM", *methods],
            (
                [str(s), f"{1e3 * 2 * s * erm:.1f}",
                 *(f"{1e3 * vs_s['methods'][m]['cpu'][i]:.1f}" for m in methods)]
                for i, s in enumerate(vs_s["samples"])
            ),
        )  # fmt: skip
        lines.append("")
    if vs_params is not None:
        methods = list(vs_params["methods"])
        widths = zip(vs_params["widths"], vs_params["params"], strict=True)
        lines += [f"MLP of growing width, s = {vs_params['s']}: step time / (2s·ERM), CPU", ""]
        lines += _table(
            ["hidden width", "parameters", *methods],
            (
                [str(w), f"{n:,}", *(f"{vs_params['methods'][m]['cpu'][i]:.3f}" for m in methods)]
                for i, (w, n) in enumerate(widths)
            ),
        )  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Legend, grid, layout; write ``path`` and close the figure."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_scaling(vs_s: dict[str, Any] | None, vs_params: dict[str, Any] | None, out_dir: Path,
                 clock: str = "cpu") -> list[Path]:  # fmt: skip
    """Small PNGs: step time vs s with the ideal 2s·ERM line; time/(2s·ERM) vs parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    names = {"tsam": "TSAM (ours)", "official": "official semantics", "resample": "tsam-resample"}
    if vs_s is not None:
        fig, ax = plt.subplots(figsize=(4.6, 3.2), dpi=90)
        samples = vs_s["samples"]
        erm = vs_s["erm"][clock]
        ax.plot(samples, [1e3 * 2 * s * erm for s in samples], "k--", label="ideal 2s·ERM")
        for m, series in vs_s["methods"].items():
            ax.plot(samples, [1e3 * v for v in series[clock]], "o-", label=names.get(m, m))
        ax.set_xticks(samples)
        ax.set_xlabel("samples s")
        ax.set_ylabel(f"step time, ms ({clock})")
        ax.set_title(f"{vs_s['model']}: step time vs s", fontsize=10)
        written.append(_save(fig, ax, out_dir / "bench_time_vs_s.png"))
    if vs_params is not None:
        fig, ax = plt.subplots(figsize=(4.6, 3.2), dpi=90)
        params = vs_params["params"]
        ax.axhline(1.0, color="k", linestyle="--", label="ideal 2s·ERM")
        for m, series in vs_params["methods"].items():
            ax.plot(params, series[clock], "o-", label=names.get(m, m))
        ax.set_xscale("log")
        ax.set_xlabel("parameters (MLP of growing width)")
        ax.set_ylabel(f"step time / (2s·ERM) ({clock})")
        ax.set_title(f"s = {vs_params['s']}: overhead vs model size", fontsize=10)
        written.append(_save(fig, ax, out_dir / "bench_overhead_vs_params.png"))
    return written


__all__ = [
    "BENCH_MODELS",
    "METHODS",
    "BenchResult",
    "Case",
    "build_case",
    "keep_heap",
    "markdown",
    "memory_rows",
    "plot_scaling",
    "ratio_rows",
    "run_bench",
    "scaling_markdown",
    "scaling_vs_params",
    "scaling_vs_s",
    "time_cases",
]
