"""The checkpoint half of a perturbation optimizer: torch's ``state_dict`` layout plus the
perturbation state, and the loaders of the layouts users have (:class:`CheckpointState`, mixed
into :class:`~tiltedsam.optim.base.PerturbationOptimizer`)."""

from __future__ import annotations

from typing import Any

from tiltedsam.optim.groups import check_group_options


def from_legacy_state_dict(state_dict: Any) -> Any:
    """A state dict in the earlier layout (``{"base": <base optimizer dict>, "perturbation":
    ...}``, what checkpoints written before issue #18 hold) in today's; anything else as it is."""
    if isinstance(state_dict, dict) and {"base", "perturbation"} <= state_dict.keys():
        if isinstance(state_dict["base"], dict) and "state" not in state_dict:
            return {**state_dict["base"], "perturbation": state_dict["perturbation"]}
    return state_dict


class CheckpointState:
    """``state_dict``/``load_state_dict`` of a perturbation optimizer: the base optimizer's
    ``state`` and ``param_groups`` plus ``perturbation`` (step count, skipped steps, the
    perturbation RNG, a subclass's ``_extra_state``)."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: the base optimizer's ``state`` (momenta) and ``param_groups`` (with
        the per-group perturbation settings), plus ``perturbation``: step count, skipped steps,
        the perturbation RNG state and the sampler's counters."""
        return {
            **self.base_optimizer.state_dict(),
            "perturbation": {
                "step_count": self.step_count,
                "skipped_steps": self.skipped_steps,
                "rng_state": self.generator.get_state(),
                **self._extra_state(),
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a dict from :meth:`state_dict`, a plain base-optimizer dict (``state`` and
        ``param_groups`` only: a run switched from AdamW to TSAM(AdamW) keeps its moments, and
        the perturbation state starts fresh), or one in the earlier layout (keys ``base`` and
        ``perturbation``, :func:`from_legacy_state_dict`)."""
        state_dict = from_legacy_state_dict(state_dict)
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"{type(self).__name__}.load_state_dict expects a dict with keys 'state' and "
                f"'param_groups' (and 'perturbation'), as state_dict() returns; got {keys}"
            )
        base = {k: v for k, v in state_dict.items() if k != "perturbation"}
        # A plain base-optimizer dict lacks the perturbation settings (rho, ...) of the groups.
        current = self.base_optimizer.param_groups
        if len(base["param_groups"]) == len(current):
            base["param_groups"] = [
                {**{k: v for k, v in now.items() if k != "params"}, **saved}
                for now, saved in zip(current, base["param_groups"], strict=True)
            ]
        for index, group in enumerate(base["param_groups"]):
            check_group_options(group, index, self.group_checks, self.defaults,
                                self._wide_options, type(self).__name__)  # fmt: skip
        self.base_optimizer.load_state_dict(base)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        if state_dict.get("perturbation") is None:
            return
        extra = dict(state_dict["perturbation"])
        self.step_count = int(extra.pop("step_count"))
        self.skipped_steps = int(extra.pop("skipped_steps", 0))
        self.generator.set_state(extra.pop("rng_state"))
        self._load_extra_state(extra)


__all__ = ["CheckpointState", "from_legacy_state_dict"]
