"""Grids and selection on validation: what ``sweep``, ``glue``, ``study`` and ``report`` choose.

One tie-break rule everywhere (:func:`pick_best`): candidates are considered in order (the order
the grid was written in; labels not in the grid after it, sorted), the highest mean score wins,
and on a tie the first one does, so a sweep and a later report of its directory choose alike.
Selection only ever reads validation scores; test scores are reported, never used.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from tiltedsam.optim import METHODS, MethodSpec, parse_method

T = TypeVar("T")


def expand_grid(entries: Sequence[str]) -> list[str]:
    """``["erm", "tsam:tilt=1/5"]`` → ``["erm", "tsam:tilt=1", "tsam:tilt=5"]`` (the Cartesian
    product of the listed values, in the order written); every spec is checked by name.

    A list-valued option is one value in brackets: ``esam2:rhos=[0.025/0.05/0.1]`` is one grid
    point, ``esam2:rhos=[0.025/0.05]/[0.05/0.1]`` two.  A bare ``/`` always separates values
    tried, so ``esam2:rhos=0.025/0.05/0.1`` (three scalar radii) is an error that says so."""
    specs: list[str] = []
    for entry in entries:
        name, _, rest = entry.partition(":")
        if not rest:
            specs.append(name)
            continue
        keys, choices = [], []
        for item in filter(None, rest.split(",")):
            key, sep, values = item.partition("=")
            if not sep:
                raise ValueError(f"grid item {item!r} in {entry!r} must look like key=v1/v2")
            keys.append(key.strip())
            choices.append(_grid_values(values, entry))
        for combo in itertools.product(*choices):
            spec = name + ":" + ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
            _check_list_options(parse_method(spec), entry)
            specs.append(spec)
    for spec in specs:
        parse_method(spec)  # validate early, before any process starts
    return specs


def _grid_values(text: str, entry: str) -> list[str]:
    """The values of one grid item: split on ``/`` outside brackets (``[a/b]`` is one value)."""
    values, current, depth = [], "", 0
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise ValueError(f"grid {entry!r}: brackets must hold one list each, e.g. [0.1/0.2]")
        if char == "/" and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    if depth:
        raise ValueError(f"grid {entry!r}: a '[' without its ']'")
    values.append(current.strip())
    if not all(values):  # "tilt=" or "tilt=1//5": a value left out, not silently one fewer
        raise ValueError(f"grid {entry!r}: an empty value in {text!r}; write key=v1/v2/...")
    return values


def _check_list_options(spec: MethodSpec, entry: str) -> None:
    """A scalar given for a list-valued option (``rhos``): in a grid that is a split list."""
    for key, value in spec.options.items():
        default = METHODS[spec.name].defaults.get(key)
        if isinstance(default, tuple | list) and not isinstance(value, tuple | list):
            raise ValueError(
                f"grid {entry!r}: {spec.name} option {key} takes a list; in a grid a "
                f"bare '/' separates the values tried, so write the list in brackets, e.g. "
                f"{key}=[{'/'.join(map(str, default))}] (one run with that list)"
            )


def pick_best(candidates: Iterable[T], score: Callable[[T], float]) -> tuple[T, float]:
    """The candidate with the highest ``score`` and its score; the first one on ties."""
    best: tuple[T, float] | None = None
    for candidate in candidates:
        value = score(candidate)
        if best is None or value > best[1]:
            best = (candidate, value)
    if best is None:
        raise ValueError("no candidate to choose from")
    return best


def group_by_method(results: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by method label, in the order the labels first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(result["method"], []).append(result)
    return groups


def ordered_labels(labels: Iterable[str], order: Sequence[str] | None = None) -> list[str]:
    """``labels`` in grid order (those not in ``order`` after them, sorted): the order in which
    selection considers candidates, so the one tie-break rule gives the first in the grid."""
    labels = set(labels)
    first = [label for label in order or () if label in labels]
    return first + sorted(labels - set(first))


def select(
    results: Sequence[dict[str, Any]],
    metric: Callable[[dict[str, Any]], float | None],
    order: Sequence[str] | None = None,
) -> dict[str, str]:
    """For each method name, the label whose runs have the best mean ``metric`` (labels where
    a run lacks it are skipped); every label in ``results`` is a candidate, considered in grid
    ``order`` (:func:`ordered_labels`), ties to the first (:func:`pick_best`)."""
    groups = group_by_method(results)
    by_name: dict[str, list[tuple[str, float]]] = {}
    for label in ordered_labels(groups, order):
        values = [metric(r) for r in groups[label]]
        if any(v is None for v in values):
            continue
        name = parse_method(label).name
        by_name.setdefault(name, []).append((label, statistics.fmean(values)))  # type: ignore[arg-type]
    return {name: pick_best(scored, lambda c: c[1])[0][0] for name, scored in by_name.items()}


def select_on_validation(
    results: Sequence[dict[str, Any]], order: Sequence[str] | None = None
) -> dict[str, str]:
    """For each method name, the label with the best mean validation accuracy."""
    return select(results, lambda r: r.get("val_accuracy"), order)


def select_glue(
    results: Sequence[dict[str, Any]], order: Sequence[str] | None = None
) -> dict[str, str]:
    """For each method name, the label with the best mean GLUE validation score."""
    return select(results, lambda r: r.get("val_score"), order)


def mixed_settings(results: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Labels whose runs differ in more than the seed, with the settings that differ (the
    data's identity too, where two runs record different ones)."""
    mixed: dict[str, list[str]] = {}
    for label, runs in group_by_method(results).items():
        configs = [r.get("config") or {} for r in runs]
        keys = sorted({k for c in configs for k in c if k != "seed"})
        differ = [k for k in keys if any(c.get(k) != configs[0].get(k) for c in configs)]
        identities = {(r.get("data_identity") or {}).get("sha256") for r in runs} - {None}
        if len(identities) > 1:
            differ.append("data identity (the data files' content)")
        if differ:
            mixed[label] = differ
    return mixed


# --------------------------------------------------------------------- study (staged tuning)
def final_val(result: dict[str, Any]) -> float:
    """Validation accuracy of the final epoch (-1 for a run that diverged)."""
    if result.get("diverged"):
        return -1.0
    return float(result["history"][-1]["val_accuracy"])


def best_epoch(result: dict[str, Any]) -> dict[str, Any]:
    """The epoch record with the best validation accuracy (the earliest on ties): early stopping."""
    return pick_best(result["history"], lambda h: h["val_accuracy"])[0]


def best_val(result: dict[str, Any]) -> float:
    """The best validation accuracy over epochs: of a run that diverged, over the epochs it
    finished before (early stopping keeps that checkpoint); -1 if it finished none."""
    if not result.get("history"):
        return -1.0
    return float(best_epoch(result)["val_accuracy"])


def best_of(tried, score: Callable[[dict[str, Any]], float]) -> tuple[dict[str, Any], float]:
    """The (options, mean score) of the tried configuration with the highest mean score over
    its seeds; the first tried on ties."""
    (options, _), value = pick_best(tried, lambda t: statistics.fmean(score(r) for r in t[1]))
    return options, value


__all__ = [
    "best_epoch",
    "best_of",
    "best_val",
    "expand_grid",
    "final_val",
    "group_by_method",
    "mixed_settings",
    "ordered_labels",
    "pick_best",
    "select",
    "select_glue",
    "select_on_validation",
]
