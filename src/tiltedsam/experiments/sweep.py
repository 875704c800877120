"""``tiltedsam sweep``: a grid of method options × seeds, run in parallel processes, finished runs
skipped, hyperparameters selected on the validation split (never on test).

Grid syntax: ``METHOD:key=v1/v2/...,key2=w1/w2`` expands to the Cartesian product of the listed
values (``tsam:tilt=0/1/5/20/100,num_samples=3/5`` is 10 method specs;
:func:`~tiltedsam.experiments.selection.expand_grid`).  A method given without a grid runs once
with its defaults.

Runs go through the run store (:func:`~tiltedsam.experiments.store.run_or_load`): keyed by
their whole configuration, so sweeps with other settings into one directory keep each other's
runs, and claimed while they train.  A sweep that finds a run claimed by another goes on with
the rest and, at the end, waits for that run and reads its result, so two sweeps pointed at the
same directory never train one configuration twice and both end with every result and a
complete report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tiltedsam._files import write_json
from tiltedsam._validation import check_choice, check_int_at_least
from tiltedsam.experiments.configs import DataConfig, TrainConfig
from tiltedsam.experiments.executors import Executor, LocalExecutor, make_jobs
from tiltedsam.experiments.report import sweep_settings, write_sweep_report
from tiltedsam.experiments.run_control import DEVICES, resolve_device
from tiltedsam.experiments.selection import expand_grid, select_on_validation
from tiltedsam.experiments.train import check_method, check_seeds
from tiltedsam.optim import parse_method


def sweep(
    grid: Sequence[str],
    *,
    seeds: Sequence[int] = (0,),
    config: TrainConfig | None = None,
    dataset: str = "mnist1d",
    data_path: str | None = None,
    label_noise: float = 0.0,
    val_size: int | float = 500,
    train_subset: int | None = None,
    out: str | Path = "runs/sweep",
    workers: int = 1,
    select_seeds: Sequence[int] | None = None,
    executor: str | Executor = "local",
    device: str = "cpu",
    search: str | None = None,
    trials: int | None = None,
    log: Callable[[str], None] = lambda line: None,
    **executor_options: Any,
) -> list[dict[str, Any]]:
    """Run every grid point × seed, then write the report.

    ``executor``: ``local`` (``workers`` processes, the default), ``ray`` (``executor_options``:
    ``address``, ``cpus_per_run``, ``gpus_per_run``, ``max_retries``) or an
    :class:`~tiltedsam.experiments.executors.Executor`; ``device`` where each run trains (not
    part of its key).  ``search="tpe"`` samples ``trials`` points per grid entry with Optuna
    instead of running the whole grid (:mod:`tiltedsam.experiments.search`).

    With ``select_seeds`` the sweep has two stages: every grid point runs on ``select_seeds`` only,
    the best configuration of each method is chosen on their mean validation accuracy, and only
    those run on ``seeds``.  The report then selects on ``select_seeds`` runs alone, so the extra
    seeds of the winners cannot change the choice.
    """
    if not val_size:
        raise ValueError("sweep selects hyperparameters on a validation split: give val_size > 0")
    check_int_at_least("workers", workers, 1)
    check_choice("device", device, DEVICES)
    if (search is None) != (trials is None):
        raise ValueError("--search and --trials go together: --search tpe --trials N")
    config = config or TrainConfig()
    seeds = check_seeds(seeds)
    if select_seeds is not None:
        select_seeds = check_seeds(select_seeds, "select_seeds")
    specs = expand_grid(grid)
    labels = [parse_method(spec).label for spec in specs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:  # each would count its runs twice in the report
        raise ValueError(f"grid points must be distinct, got {twice} more than once")
    for spec in specs:  # a bad option fails here, before any process starts
        check_method(parse_method(spec), config)
    if search is not None:
        from tiltedsam.experiments.search import check_search

        check_search(search, trials)
    data = DataConfig(dataset=dataset, data_path=data_path, label_noise=label_noise,
                      train_subset=train_subset, val_size=val_size)  # fmt: skip
    points = grid_points(specs, data, config) if search is None else {}
    identity = data.identity()  # computed once here, checked against every stored run
    own = isinstance(executor, str)
    if own and executor == "local":  # no CUDA here fails before anything is written
        resolve_device(device)
    if own:  # a bad executor option fails before anything is written
        executor = make_executor(executor, workers=workers, **executor_options)
    root = Path(out)
    _write_settings(root, specs if search is None else [], select_seeds, points)
    try:
        done = _run(executor, specs, grid, seeds, select_seeds, search, trials, config, root,
                    data, identity, device, log)  # fmt: skip
    finally:
        if own:
            executor.close()
    write_sweep_report(root, done)
    return done


def _run(executor, specs, grid, seeds, select_seeds, search, trials, config, root, data,
         identity, device, log) -> list[dict[str, Any]]:  # fmt: skip
    """The grid (or the search) on the selection seeds, then the winners on the other seeds."""

    def make(specs: Sequence[str], seeds: Sequence[int]) -> list:
        return make_jobs(specs, seeds, root=root, data=data, config=config, identity=identity,
                         device=device)  # fmt: skip

    first = seeds if select_seeds is None else select_seeds
    if search is None:
        done = executor.run(make(specs, first))
    else:  # the sampled points join the grid of sweep.json once the search is done
        from tiltedsam.experiments.search import search_grid

        settings = {"data": data.settings(), "train": asdict(config), "seeds": list(first)}
        done, specs = search_grid(grid, first, trials=trials, epochs=config.epochs, root=root,
                                  executor=executor, make=make, sampler=search, log=log,
                                  settings=settings)  # fmt: skip
        _write_settings(root, specs, select_seeds, grid_points(specs, data, config))
    if select_seeds is not None:
        order = [parse_method(spec).label for spec in specs]
        winners = list(select_on_validation(done, order).values())
        done += executor.run(make(winners, [s for s in seeds if s not in select_seeds]))
    return done


def grid_points(specs: Sequence[str], data: DataConfig, config: TrainConfig) -> dict[str, str]:
    """``{point key: label}`` of the grid (:func:`~tiltedsam.experiments.store.point_key`): how
    ``tiltedsam report`` finds a point's runs, which keep the label of whichever command trained
    them first.  Two labels of one point (``erm`` and ``erm:lr=0.1`` when 0.1 is the default) are
    an error: the report would count its runs twice."""
    from tiltedsam.experiments.compare import run_config

    points: dict[str, str] = {}
    for spec in specs:
        method = parse_method(spec)
        point = run_config(method, 0, data.settings(), config).point
        if point in points:
            raise ValueError(
                f"grid points {points[point]!r} and {method.label!r} are the same configuration "
                "(the same options once defaults are filled in): list it once"
            )
        points[point] = method.label
    return points


def _write_settings(root: Path, specs: Sequence[str], select_seeds: Sequence[int] | None,
                    points: dict[str, str]) -> None:  # fmt: skip
    """sweep.json: the grid (merged with earlier sweeps into this directory: it orders the
    report's ties), the selection seeds and each point's key."""
    earlier = sweep_settings(root)
    grid = [s for s in earlier.get("grid", []) if s not in specs] + list(specs)
    known = {**earlier.get("points", {}), **points}
    write_json(root / "sweep.json", {"grid": grid, "points": known, "select_seeds":
                                     list(select_seeds) if select_seeds is not None else None})  # fmt: skip


EXECUTORS = ("local", "ray")


def make_executor(name: str, *, workers: int = 1, **ray_options: Any) -> Executor:
    """``local`` (``workers`` processes) or ``ray`` (``workers`` runs at once on a local
    cluster it starts, or the cluster at ``address``; ``ray_options``: see
    :class:`~tiltedsam.experiments.ray_executor.RayExecutor`)."""
    check_choice("executor", name, EXECUTORS)
    if name == "local":
        retries = ray_options.pop("max_retries", None)
        given = sorted(k for k, v in ray_options.items() if v is not None)
        if given:
            flags = ", ".join(f"{k} (--{'ray-' if k == 'address' else ''}{k.replace('_', '-')})"
                              for k in given)  # fmt: skip
            raise ValueError(f"the option(s) {flags} only apply to --executor ray")
        return LocalExecutor(workers, 3 if retries is None else retries)
    from tiltedsam.experiments.ray_executor import RayExecutor  # only with --executor ray

    return RayExecutor(workers=workers, **{k: v for k, v in ray_options.items() if v is not None})
