r"""Tilt schedules: the tilt :math:`t_k` used at optimizer step :math:`k`.

* ``constant``: :math:`t_k = t`;
* ``warmup``: :math:`t_k = t \cdot \min(k / K, 1)` (0 → t over ``total_steps`` K);
* ``decay``: :math:`t_k = t \cdot \max(1 - k / K, 0)` (t → 0 over K).

These follow the official code's ``schedule_t`` 1 and 2 (``k / K`` and ``(K - k) / K``).
A schedule is a pure function of the step count, so the optimizer's checkpoint only needs ``k``.
With ``t = inf`` only ``constant`` is allowed (``inf * 0`` has no meaning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tiltedsam._validation import check_choice, check_int_at_least, check_tilt

SCHEDULES = ("constant", "warmup", "decay")


@dataclass(frozen=True)
class TiltSchedule:
    """``kind`` in {constant, warmup, decay}; ``total_steps`` K is required unless constant."""

    tilt: float
    kind: str = "constant"
    total_steps: int | None = None

    def __post_init__(self) -> None:
        check_tilt(self.tilt)
        check_choice("tilt_schedule", self.kind, SCHEDULES)
        if self.kind != "constant":
            if self.total_steps is None:
                raise ValueError(f"tilt_schedule={self.kind!r} needs total_steps (an int >= 1)")
            check_int_at_least("total_steps", self.total_steps, 1)
            if math.isinf(self.tilt):
                raise ValueError(f"tilt_schedule={self.kind!r} needs a finite tilt, got inf")

    def __call__(self, step: int) -> float:
        """The tilt at 0-based optimizer step ``step``."""
        if self.kind == "constant":
            return float(self.tilt)
        fraction = min(step / self.total_steps, 1.0)
        if self.kind == "warmup":
            return float(self.tilt) * fraction
        return float(self.tilt) * (1.0 - fraction)
