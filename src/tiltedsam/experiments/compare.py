"""``tiltedsam compare``: ERM / SAM / TSAM (or any method specs) × seeds on one data set."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tiltedsam.data import ArrayDataset, load_dataset
from tiltedsam.experiments.methods import expand_methods, parse_method
from tiltedsam.experiments.report import plot_accuracy, summary_table
from tiltedsam.experiments.store import load_finished, run_dir, write_json_atomic
from tiltedsam.experiments.train import TrainConfig, train_run


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
    forces training).  Outputs in ``out``: ``runs/<method>/seed<k>/summary.json``,
    ``results.csv`` (one row per run), ``metrics.csv`` (one row per epoch), ``summary.md``
    and ``accuracy.png``.  ``data`` replaces the named data set (e.g. data made by a test).
    """
    config = config or TrainConfig()
    specs = [parse_method(m) for m in expand_methods(list(methods))]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods must be distinct, got {labels}")
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
        write_json_atomic(directory / "config.json", run_config)
        result = train_run(
            spec, data, config, seed, progress=progress, position=1,
            save_model=directory / "model.pt", checkpoint=directory / "checkpoint.pt",
            metrics=directory / "metrics.jsonl",
        ).to_dict()  # fmt: skip
        write_json_atomic(directory / "summary.json", {"config": run_config, "result": result})
        (directory / "checkpoint.pt").unlink(missing_ok=True)  # the finished run keeps model.pt
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
    """Write ``results.csv``, ``metrics.csv``, ``summary.md`` and ``accuracy.png`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    table = summary_table(results)
    (root / "summary.md").write_text(header + "\n" + table)
    fields = ["method", "seed", "test_accuracy", "test_loss", "train_loss", "train_accuracy",
              "wall_time", "cpu_time", "steps", "closure_calls"]  # fmt: skip
    with open(root / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    with open(root / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed", *results[0]["history"][0].keys()])
        for r in results:
            for h in r["history"]:
                writer.writerow([r["method"], r["seed"], *h.values()])
    plot_accuracy(results, root / "accuracy.png")
    (root / "results.json").write_text(json.dumps(results, indent=1))
    return table
