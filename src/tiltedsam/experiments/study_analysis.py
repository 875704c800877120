"""Flatness of a study's selected solutions: is the method that generalises also the flatter?

For a finished run: the loss on a fixed random training subset (the labels it trained on), the top
Hessian eigenvalue λ1 (Lanczos), tr H (Hutchinson), the mean and variance of L(θ+ε) for
ε ~ N(0, δ²I), and the cross-evaluation of paper Table 3 (the solution's loss under ERM, SAM and
TSAM objectives, with the same random directions for every solution).  Cached per run as
``analysis.json`` next to its ``model.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tiltedsam._files import write_json
from tiltedsam.analysis._model_state import training_subset
from tiltedsam.analysis.cross_eval import cross_evaluate
from tiltedsam.analysis.flatness import noise_flatness
from tiltedsam.analysis.hessian import hutchinson_trace, top_eigenvalues
from tiltedsam.data.mnist1d import ArrayDataset
from tiltedsam.models import create_model

SETTINGS: dict[str, Any] = {
    "subset": 1000,  # training examples, drawn as subset_draw says
    "subset_draw": "random",  # a fixed-seed sample (older measurements: "first" examples)
    "deltas": [0.01, 0.02, 0.05],
    "draws": 50,
    "probes": 20,
    "rho": 0.05,
    "tsam_radius": 1.0,
    "tilts": [1.0, 5.0, 20.0, 100.0],
    "seed": 0,
}


def flatness_of(model: nn.Module, data: ArrayDataset, settings: dict[str, Any]) -> dict[str, Any]:
    """The measurements of the module doc for ``model`` on ``data``'s training subset.

    Attention runs on PyTorch's math kernel here: the fused CPU kernels have no second
    derivative, which Hessian-vector products need."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        return _flatness_of(model, data, settings)


def _flatness_of(model: nn.Module, data: ArrayDataset, settings: dict[str, Any]) -> dict[str, Any]:
    index = training_subset(len(data.x_train), settings["subset"], settings["seed"],
                            settings.get("subset_draw", "first"))  # fmt: skip
    x, y = data.x_train[index], data.y_train[index]
    batches = [(x[i : i + 500], y[i : i + 500]) for i in range(0, len(x), 500)]
    loss_fn = nn.functional.cross_entropy
    seed = settings["seed"]
    flat = noise_flatness(model, loss_fn, batches, settings["deltas"], draws=settings["draws"],
                          tilts=(), seed=seed)  # fmt: skip
    spectrum = top_eigenvalues(model, loss_fn, batches, k=1, seed=seed, tol=1e-3)
    trace = hutchinson_trace(model, loss_fn, batches, num_probes=settings["probes"], seed=seed)
    cross = cross_evaluate({"run": model}, loss_fn, batches, rho=settings["rho"],
                           tsam_radius=settings["tsam_radius"], tilts=settings["tilts"],
                           draws=settings["draws"], seed=seed)["run"]  # fmt: skip
    return {
        "loss": flat.clean_loss,
        "lambda1": spectrum.eigenvalues[0],
        "trace": trace.trace,
        "noise": {f"{s.delta:g}": {"mean": s.mean, "var": s.variance} for s in flat.scales},
        "cross": cross,
        "settings": settings,
    }


def analysis_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """:data:`SETTINGS` with a study's ``flatness`` overrides (``subset``, ``draws``,
    ``probes``: the measurement's cost); an unknown key or a non-positive count is an error."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(TUNABLE))
    if unknown:
        raise ValueError(f"flatness: unknown setting(s) {unknown}; allowed: {list(TUNABLE)}")
    for key, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"flatness.{key} must be an integer >= 1, got {value!r}")
    return {**SETTINGS, **overrides}


TUNABLE = ("subset", "draws", "probes")


def stored_analysis(directory: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """``directory/analysis.json`` if it holds a result measured with ``settings``, else None
    (also when it is missing or damaged)."""
    cached = directory / "analysis.json"
    if not cached.exists():
        return None
    try:
        stored = json.loads(cached.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # damaged: computed again
    # Measurements from before ``subset_draw`` existed took the first examples.
    if not isinstance(stored, dict) or not isinstance(stored.get("settings"), dict):
        return None  # damaged: computed again
    recorded = {"subset_draw": "first", **stored["settings"]}
    return stored if recorded == json.loads(json.dumps(settings)) else None


def is_analyzed(directory: Path, settings: dict[str, Any] | None = None) -> bool:
    """Whether ``directory/analysis.json`` holds a result for ``settings`` (default
    :data:`SETTINGS`)."""
    return stored_analysis(directory, SETTINGS if settings is None else settings) is not None


def analyze_run(
    directory: Path, model_name: str, data: ArrayDataset, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``directory/analysis.json``, computed from ``directory/model.pt`` unless cached with
    ``settings`` (default :data:`SETTINGS`)."""
    settings = dict(SETTINGS if settings is None else settings)
    stored = stored_analysis(directory, settings)
    if stored is not None:
        return stored
    cached = directory / "analysis.json"
    model = create_model(model_name, data.x_train.shape[1:], data.num_classes)
    model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    result = flatness_of(model, data, settings)
    write_json(cached, result)
    return result
