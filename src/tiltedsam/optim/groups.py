"""Checks of a param group as it enters a perturbation optimizer.

Every per-group option (``rho``, ``noise_radius``, ``alpha``, ...) is checked with the function
its constructor argument is checked with, whether the group comes from the constructor's list of
dicts, from ``add_param_group`` or from ``load_state_dict``: ``{"params": ..., "rho": -1}`` is an
error naming the group, the option and its range (a negative ρ turned the ascent downhill).
An option the optimizer takes once for all groups (``tilt``, ``num_samples``, ``model``, ...: a
constructor keyword that is not a group default) is an error in a group, not silently ignored.
Parameters must be dense and real: the passes take global L2 norms and foreach arithmetic over
them, which sparse and complex tensors do not support (the error said ``linalg.vector_norm``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

GroupCheck = Callable[[str, Any], Any]


def option_checks(**checks: GroupCheck) -> Mapping[str, GroupCheck]:
    """An optimizer class's ``group_checks``: option name → the constructor's check (read-only)."""
    return MappingProxyType(checks)


def group_params(group: dict[str, Any]) -> list[Any]:
    """``group["params"]`` as a list (a single tensor wrapped), written back into ``group``, as
    ``torch.optim.Optimizer.add_param_group`` does; a set stays a set (torch refuses it)."""
    params = group.get("params")
    if isinstance(params, Tensor):
        group["params"] = [params]
    elif params is not None and not isinstance(params, set | str):
        group["params"] = list(params)
    return group.get("params") or []


def _keywords(function: Any) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind in kinds}


@functools.cache
def optimizer_wide_options(cls: type, base_cls: type) -> frozenset[str]:
    """The keywords of ``cls``'s constructors (its own and its bases' up to torch's Optimizer)
    that the base optimizer ``base_cls`` does not take: a group that sets one of them, and does
    not have it as a group default, would be ignored."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass in (torch.optim.Optimizer, object):
            continue
        names |= _keywords(init)
    names -= _keywords(base_cls.__init__)  # RMSprop's alpha is the base's, not tsam-intermittent's
    return frozenset(names - {"self", "params", "base_optimizer_cls", "defaults"})


def check_group_options(
    group: Mapping[str, Any],
    index: int,
    checks: Mapping[str, GroupCheck],
    defaults: Mapping[str, Any],
    wide: frozenset[str] = frozenset(),
    owner: str = "the optimizer",
) -> None:
    """Each option of ``checks`` the group sets (or inherits from ``defaults``), checked as
    ``param_groups[index] option <name>``; an option of ``wide`` (taken by ``owner`` for all
    groups at once: :func:`optimizer_wide_options`) that is not a group default is an error."""
    found = sorted(k for k in group if k in wide and k not in defaults)
    if found:
        raise ValueError(
            f"param_groups[{index}] option(s) {found}: {owner} takes them for all param groups "
            f"at once, not per group; pass them to the constructor ({owner}(params, ..., "
            f"{found[0]}=...))"
        )
    for key, check in checks.items():
        if key in group or key in defaults:
            check(f"param_groups[{index}] option {key}", group.get(key, defaults.get(key)))


def recheck_group_options(
    param_groups: list[dict[str, Any]], checks: Mapping[str, GroupCheck]
) -> None:
    """The options of ``checks`` each group holds now, checked again at a step: a scheduler or a
    user may have set them since (rho = -1 would ascend the wrong way, silently).  A tensor
    value is checked on entry only (reading a CUDA tensor would sync the host every step)."""
    for index, group in enumerate(param_groups):
        current = {k: v for k, v in group.items() if k in checks and not isinstance(v, Tensor)}
        check_group_options(current, index, checks, {})


def check_dense_real(params: list[Any], index: int) -> None:
    """Every parameter of group ``index`` is a dense (strided), real tensor."""
    for j, p in enumerate(params):
        if not isinstance(p, Tensor):
            continue  # torch's own add_param_group names it
        where = f"param_groups[{index}]['params'][{j}] (shape {tuple(p.shape)})"
        if p.layout is not torch.strided:
            raise TypeError(
                f"{where} is a {p.layout} tensor: perturbation optimizers need dense "
                "parameters (their passes take global norms of the parameters and gradients)"
            )
        if p.is_complex():
            raise TypeError(
                f"{where} is complex ({p.dtype}): perturbation optimizers need real parameters; "
                "store it as real pairs (torch.view_as_real) and view it as complex in forward"
            )


def check_dense_grads(params: list[Tensor]) -> None:
    """The gradients of one pass are dense: a sparse gradient (``nn.Embedding(sparse=True)``)
    cannot be normalised or combined across passes."""
    for j, p in enumerate(params):
        grad = p.grad
        if grad is not None and grad.layout is not torch.strided:
            raise TypeError(
                f"parameter {j} (shape {tuple(p.shape)}) received a {grad.layout} gradient: "
                "perturbation optimizers need dense gradients; build the module with "
                "sparse=False (e.g. nn.Embedding(..., sparse=False))"
            )


__all__ = ["GroupCheck", "check_dense_grads", "check_dense_real", "check_group_options",
           "group_params", "option_checks", "recheck_group_options"]  # fmt: skip
