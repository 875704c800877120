"""Figures made for the docs site (not by the experiment commands).

    python scripts/docs_figures.py            # writes docs/img/concepts_tilt.png (about 20 s)

The figure of docs/concepts/index.md: on the paper's 1-D loss (Fig. 1),
L(θ) = 2 sin(4πθ)/(2θ) + 0.005(θ − 1)², with ε uniform on [−ρ, ρ], ρ = 0.2:

* left: the exact tilted objective L^t (quadrature, ``tiltedsam.toy``) for t = 0, 1, 5 and
  t = ∞ (SAM's max over the window), each with its minimiser on the plotted grid;
* right: the tilted weights w^t(ε) ∝ exp(t L(θ + ε)) over the window around θ = 0.45, the point
  where each perturbation's gradient is weighted in the TSAM step.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tiltedsam.toy import TOY_LOSSES, tilted_objective_1d

RHO = 0.2
TILTS = (0.0, 1.0, 5.0, math.inf)
COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")


def label(t: float) -> str:
    return "t = ∞ (SAM)" if math.isinf(t) else f"t = {t:g}"


def main(out: Path) -> None:
    loss = TOY_LOSSES["wavy"]
    grid = np.linspace(0.3, 2.4, 421)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), width_ratios=(1.6, 1))
    left.plot(grid, loss(grid), color="0.6", lw=1, label="L(θ)")
    for t, color in zip(TILTS, COLORS, strict=True):
        values = np.array([tilted_objective_1d(loss, th, t, RHO) for th in grid])
        best = int(np.argmin(values))
        left.plot(grid, values, color=color, lw=1.6, label=f"$L^t$, {label(t)}")
        left.plot(grid[best], values[best], "o", color=color, ms=6)
    left.set_xlabel("θ")
    left.set_title(f"exact tilted objective, ε ~ U[−{RHO}, {RHO}] (dots: minimisers)", fontsize=9)
    left.set_ylim(-3, 2.5)
    left.legend(fontsize=7, loc="upper right")

    theta = 0.45
    eps = np.linspace(-RHO, RHO, 401)
    values = loss(theta + eps)
    right.plot(eps, values, color="0.6", lw=1, label="L(θ + ε)")
    twin = right.twinx()
    for t, color in zip(TILTS[:3], COLORS[:3], strict=True):
        weights = np.exp(t * (values - values.max()))
        weights /= weights.mean()
        twin.plot(eps, weights, color=color, lw=1.6, label=f"$w^t(ε)$, {label(t)}")
    right.set_xlabel("ε")
    right.set_title(f"tilted weights around θ = {theta}", fontsize=9)
    twin.set_ylabel("weight (mean 1)", fontsize=8)
    lines = right.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs/img/concepts_tilt.png")
