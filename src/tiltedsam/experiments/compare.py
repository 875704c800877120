"""``tiltedsam compare``: ERM / SAM / TSAM (or any method specs) × seeds on one data set."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiltedsam.data import ArrayDataset
from tiltedsam.experiments.configs import DataConfig, TrainConfig, settings
from tiltedsam.experiments.progress import progress_bar
from tiltedsam.experiments.report import write_compare_report
from tiltedsam.experiments.run_control import resolve_device
from tiltedsam.experiments.store import RunConfig, full_options, run_or_load
from tiltedsam.experiments.train import check_method, check_seeds, train_run
from tiltedsam.optim import MethodSpec, expand_methods, parse_method
from tiltedsam.optim.registry import base_class, base_keywords


def data_fingerprint(data: ArrayDataset) -> str:
    """SHA-256 of a data set's tensors (for data handed in rather than loaded by name)."""
    digest = hashlib.sha256()
    for tensor in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test):
        if tensor is not None:
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_config(spec: MethodSpec, seed: int, data: dict[str, Any], config: TrainConfig) -> RunConfig:
    """The run store's configuration of one run of ``compare`` or ``sweep``."""
    options = full_options(spec.name, spec.options, config.shared_options())
    return RunConfig(spec.name, options, seed, data, settings(config))


def compare(
    methods: Sequence[str] = ("erm", "sam", "tsam"),
    *,
    seeds: Sequence[int] = (0,),
    config: TrainConfig | None = None,
    dataset: str = "mnist1d",
    data_path: str | Path | None = None,
    out: str | Path = "runs/compare",
    progress: bool = True,
    rerun: bool = False,
    data: ArrayDataset | None = None,
    label_noise: float = 0.0,
    val_size: int | float = 0,
    train_subset: int | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Train every method spec with every seed; write per-run results, a table and a plot.

    Runs live in the run store (:mod:`tiltedsam.experiments.store`): each is keyed by its whole
    configuration, read back when finished (``rerun=True`` trains it again), claimed while it
    trains (a second command waits for it) and leaves its final weights in ``model.pt`` (for
    ``tiltedsam analyze``).  Outputs in ``out``: ``results.csv`` (one row per run),
    ``metrics.csv`` (one row per epoch), ``results.json``, ``summary.md`` and ``accuracy.png``.
    ``data`` replaces the named data set (e.g. data made by a test; its content is hashed into
    the runs' configurations).  ``device`` (``auto``, ``cpu``, ``cuda``) is where runs train;
    it is recorded in each run's result, not in its key.
    """
    config = config or TrainConfig()
    specs = [parse_method(m) for m in expand_methods(list(methods))]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods must be distinct, got {labels}")
    seeds = check_seeds(seeds)
    resolve_device(device)  # a bad or missing device fails before any training
    for spec in specs:  # fail before any training, not after the first methods have run
        check_method(spec, config)
    root = Path(out)
    identity = None  # data handed in: its content is in the key
    if data is None:
        source = DataConfig(dataset=dataset, data_path=None if data_path is None else str(data_path),
                            label_noise=label_noise, train_subset=train_subset, val_size=val_size)  # fmt: skip
        data, data_settings, identity = source.load(), source.settings(), source.identity
    else:
        dataset = data.name
        data_settings = {"name": data.name, "content": data_fingerprint(data)}
    results: list[dict[str, Any]] = []
    outer = progress_bar([(s, k) for s in specs for k in seeds], desc="runs", position=0,
                         leave=True, enabled=progress)  # fmt: skip
    for spec, seed in outer:

        def train(directory: Path, spec=spec, seed=seed) -> dict[str, Any]:
            return train_run(spec, data, config, seed, progress=progress, position=1,
                             save_model=directory / "model.pt",
                             checkpoint=directory / "checkpoint.pt",
                             metrics=directory / "metrics.jsonl", device=device).to_dict()  # fmt: skip

        def waiting(directory: Path, spec=spec, seed=seed) -> None:
            outer.write(f"{spec.label} seed {seed}: another process is training it; waiting")

        run = run_config(spec, seed, data_settings, config)
        result = run_or_load(root, run, train, rerun=rerun, on_wait=waiting, identity=identity)
        # the label this command gave it, and the configuration (its summary file, in errors)
        result = {**result, "method": spec.label, "config": run.as_dict()}
        results.append(result)
        outer.write(
            f"{spec.label:>24s} seed {seed}: test acc {100 * result['test_accuracy']:.2f}%  "
            f"train loss {result['train_loss']:.4f}  {result['wall_time']:.1f}s"
        )
    header = _header(dataset, config, seeds)
    header += f"Training examples: {len(data.x_train)}"
    header += f"; label noise {label_noise:g}" if label_noise else ""
    header += f"; validation split {len(data.x_val)}" if data.x_val is not None else ""
    write_compare_report(results, root, header=header + ".\n")
    return results


def _header(dataset: str, config: TrainConfig, seeds: Sequence[int]) -> str:
    base = base_class(config.base)
    momentum = f", momentum {config.momentum}" if "momentum" in base_keywords(base) else ""
    return (
        f"Data set {dataset}, model {config.model}, {config.epochs} epochs, batch "
        f"{config.batch_size}, {base.__name__} lr {config.lr} ({config.lr_schedule}){momentum}, "
        f"weight decay {config.weight_decay}, seeds {list(seeds)}.\n"
    )
