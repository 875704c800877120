"""``tiltedsam compare``: ERM / SAM / TSAM (or any method specs) × seeds on one data set."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tiltedsam.data import ArrayDataset, load_dataset
from tiltedsam.experiments.checkpoint import remove_checkpoints
from tiltedsam.experiments.report import plot_accuracy, summary_table
from tiltedsam.experiments.store import (
    claim_run,
    clear_run,
    load_finished,
    run_dir,
    write_json_atomic,
    write_text_atomic,
)
from tiltedsam.experiments.train import TrainConfig, check_method, check_seeds, train_run
from tiltedsam.optim import expand_methods, parse_method


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
) -> list[dict[str, Any]]:
    """Train every method spec with every seed; write per-run results, a table and a plot.

    Each run also leaves its final weights in ``model.pt`` (for ``tiltedsam analyze``).
    Finished runs with the same settings are read back instead of trained again (``rerun=True``
    forces training).  Each run directory is claimed while it trains (as in sweeps), so two
    commands on one output directory never train the same run twice.  Outputs in ``out``: ``runs/<method>/seed<k>/summary.json``,
    ``results.csv`` (one row per run), ``metrics.csv`` (one row per epoch), ``summary.md``
    and ``accuracy.png``.  ``data`` replaces the named data set (e.g. data made by a test).
    """
    config = config or TrainConfig()
    specs = [parse_method(m) for m in expand_methods(list(methods))]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods must be distinct, got {labels}")
    seeds = check_seeds(seeds)
    for spec in specs:  # fail before any training, not after the first methods have run
        check_method(spec, config)
    root = Path(out)
    if data is None:
        data = load_dataset(dataset, data_path, label_noise=label_noise, val_size=val_size,
                            train_subset=train_subset)  # fmt: skip
    else:
        dataset = data.name
    data_setting = {"name": dataset, "label_noise": label_noise, "val_size": val_size,
                    "train_subset": train_subset, "train_examples": len(data.x_train)}  # fmt: skip
    results: list[dict[str, Any]] = []
    jobs = [(spec, seed) for spec in specs for seed in seeds]
    outer = tqdm(jobs, desc="runs", position=0, disable=not progress, dynamic_ncols=True)
    for spec, seed in outer:
        run_config = {
            "method": spec.name,
            "options": spec.kwargs(),
            "seed": seed,
            "dataset": dataset,
            "data": data_setting,
            "train": asdict(config),
        }
        directory = run_dir(root, spec.label, seed)
        stored = None if rerun else load_finished(directory, run_config)
        if stored is not None:
            results.append(stored["result"])
            continue
        claim = claim_run(directory)  # as in sweeps: never two processes on one run
        if claim is None:
            outer.write(f"{spec.label} seed {seed}: another process is training it; waiting")
            claim = claim_run(directory, wait=True)
        with claim:
            stored = None if rerun else load_finished(directory, run_config)
            if stored is not None:  # the other process finished it
                results.append(stored["result"])
                continue
            if rerun or (directory / "summary.json").exists():
                clear_run(directory)  # --rerun, or a finished run of other settings: replaced
            write_json_atomic(directory / "config.json", run_config)
            result = train_run(
                spec, data, config, seed, progress=progress, position=1,
                save_model=directory / "model.pt", checkpoint=directory / "checkpoint.pt",
                metrics=directory / "metrics.jsonl",
            ).to_dict()  # fmt: skip
            write_json_atomic(directory / "summary.json", {"config": run_config, "result": result})
            remove_checkpoints(directory / "checkpoint.pt")  # the finished run keeps model.pt
        results.append(result)
        outer.write(
            f"{spec.label:>24s} seed {seed}: test acc {100 * result['test_accuracy']:.2f}%  "
            f"train loss {result['train_loss']:.4f}  {result['wall_time']:.1f}s"
        )
    header = _header(dataset, config, seeds)
    header += f"Training examples: {len(data.x_train)}"
    header += f"; label noise {label_noise:g}" if label_noise else ""
    header += f"; validation split {len(data.x_val)}" if data.x_val is not None else ""
    write_reports(results, root, header=header + ".\n")
    return results


def _header(dataset: str, config: TrainConfig, seeds: Sequence[int]) -> str:
    return (
        f"Data set {dataset}, model {config.model}, {config.epochs} epochs, batch "
        f"{config.batch_size}, SGD lr {config.lr} ({config.lr_schedule}), momentum "
        f"{config.momentum}, weight decay {config.weight_decay}, seeds {list(seeds)}.\n"
    )


def write_reports(results: list[dict[str, Any]], root: Path, header: str = "") -> str:
    """Write ``results.csv``, ``metrics.csv``, ``summary.md`` and ``accuracy.png`` under ``root``
    (each through a temporary file and a rename)."""
    root.mkdir(parents=True, exist_ok=True)
    table = summary_table(results)
    write_text_atomic(root / "summary.md", header + "\n" + table)
    fields = ["method", "seed", "test_accuracy", "test_loss", "train_loss", "train_accuracy",
              "wall_time", "cpu_time", "steps", "closure_calls"]  # fmt: skip
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    write_text_atomic(root / "results.csv", handle.getvalue())
    handle = io.StringIO(newline="")
    rows = csv.writer(handle)
    rows.writerow(["method", "seed", *results[0]["history"][0].keys()])
    for r in results:
        for h in r["history"]:
            rows.writerow([r["method"], r["seed"], *h.values()])
    write_text_atomic(root / "metrics.csv", handle.getvalue())
    plot_accuracy(results, root / "accuracy.png")
    write_text_atomic(root / "results.json", json.dumps(results, indent=1))
    return table
