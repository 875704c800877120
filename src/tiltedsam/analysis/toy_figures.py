r"""The paper's 1-D toy figures, from the exact quadrature objective and from the estimators.

* Fig. 1: trajectories on ``wavy`` (start θ = 0.5, lr 0.005, ρ = 0.2) of ERM, SAM and TSAM for
  t ∈ {0, 1, 5, 20, 100}.  TSAM follows the exact gradient of :math:`L^t` (quadrature, ε uniform
  on [−ρ, ρ]); beside it, the same run with the ``uniform`` estimator (s samples per step) and
  with the ``ascent`` sampler (Alg. 2) driven by :class:`tiltedsam.TSAM`, so the difference
  between objective and algorithm is visible.
* Fig. 5: SAM's objective :math:`\max_{|\varepsilon|\le\rho} L` on ``kink`` for growing ρ.
* Fig. 6: the exact TSAM objective on ``kink`` for several t, with the mean of the s-sample
  log-mean-exp estimate (biased low) beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tiltedsam._files import save_figure
from tiltedsam.optim.tsam import TSAM
from tiltedsam.toy import (
    TOY_LOSSES,
    sam_objective,
    tilted_gradient_1d,
    tilted_objective_1d,
    torch_loss,
)


def _derivative(name: str, theta: float) -> float:
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(torch_loss(name)(th), th)
    return float(grad)


@dataclass
class Trajectory:
    label: str
    thetas: list[float]


def erm_trajectory(name: str, theta0: float, lr: float, steps: int) -> list[float]:
    thetas = [theta0]
    for _ in range(steps):
        thetas.append(thetas[-1] - lr * _derivative(name, thetas[-1]))
    return thetas


def sam_trajectory(name: str, theta0: float, lr: float, rho: float, steps: int) -> list[float]:
    """1-D SAM: ε = ρ·sign(L'(θ)), step with L'(θ + ε)."""
    thetas = [theta0]
    for _ in range(steps):
        th = thetas[-1]
        eps = rho * math.copysign(1.0, _derivative(name, th))
        thetas.append(th - lr * _derivative(name, th + eps))
    return thetas


def exact_tsam_trajectory(name: str, t: float, theta0: float, lr: float, rho: float, steps: int):
    thetas = [theta0]
    for _ in range(steps):
        thetas.append(thetas[-1] - lr * tilted_gradient_1d(name, thetas[-1], t, rho))
    return thetas


def estimator_tsam_trajectory(
    name: str, t: float, theta0: float, lr: float, rho: float, steps: int, *,
    sampler: str, num_samples: int, noise_radius: float = 0.0, seed: int = 0,
) -> list[float]:  # fmt: skip
    """The same run with :class:`TSAM` on a one-parameter model."""
    param = torch.nn.Parameter(torch.tensor([theta0], dtype=torch.float64))
    opt = TSAM([param], torch.optim.SGD, tilt=t, num_samples=num_samples, rho=rho,
               noise_radius=noise_radius, sampler=sampler, lr=lr, seed=seed)  # fmt: skip
    loss_fn = torch_loss(name)

    def closure():
        loss = loss_fn(param).sum()
        loss.backward()
        return loss

    thetas = [theta0]
    for _ in range(steps):
        opt.step(closure)
        thetas.append(float(param.detach()))
    return thetas


def figure1(out: Path, *, tilts: Sequence[float] = (0, 1, 5, 20, 100), steps: int = 400,
            theta0: float = 0.5, lr: float = 0.005, rho: float = 0.2,
            num_samples: int = 50, grid_points: int = 200) -> dict[str, float]:  # fmt: skip
    """Paper Fig. 1 as a PNG; returns the final θ of every trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = TOY_LOSSES["wavy"]
    grid = np.linspace(*loss.window, 600)
    panels = [("ERM", erm_trajectory("wavy", theta0, lr, steps), None, None),
              ("SAM", sam_trajectory("wavy", theta0, lr, rho, steps), None, None)]  # fmt: skip
    for t in tilts:
        exact = exact_tsam_trajectory("wavy", t, theta0, lr, rho, steps)
        uniform = estimator_tsam_trajectory("wavy", t, theta0, lr, rho, steps,
                                            sampler="uniform", num_samples=num_samples)  # fmt: skip
        ascent = estimator_tsam_trajectory("wavy", t, theta0, lr, rho, steps, sampler="ascent",
                                           num_samples=3, noise_radius=rho)  # fmt: skip
        panels.append((f"TSAM t={t:g}", exact, uniform, ascent))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), dpi=90, sharey=True)
    finals = {}
    coarse = np.linspace(loss.window[0] + rho, loss.window[1] - rho, grid_points)
    for ax, (title, path, uniform, ascent) in zip(axes, panels, strict=True):
        ax.plot(grid, loss(grid), color="tab:blue", lw=1)
        if title.startswith("TSAM"):
            t = float(title.split("=")[1])
            objective = np.array([tilted_objective_1d("wavy", th, t, rho) for th in coarse])
            ax.plot(coarse, objective, "--", color="tab:purple", lw=1, label="exact L^t")
            finals[title + " argmin L^t"] = float(coarse[int(np.argmin(objective))])
        ax.plot(path, loss(np.array(path)), ".", color="tab:orange", ms=2, label="exact")
        ax.plot(path[-1], float(loss(path[-1])), "*", color="red", ms=12)
        finals[title] = path[-1]
        if uniform is not None:
            ax.plot(uniform[-1], float(loss(uniform[-1])), "x", color="black", ms=8,
                    label=f"uniform s={num_samples}")  # fmt: skip
            ax.plot(ascent[-1], float(loss(ascent[-1])), "^", color="green", ms=7,
                    label="ascent s=3")  # fmt: skip
            finals[title + " uniform"] = uniform[-1]
            finals[title + " ascent"] = ascent[-1]
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("θ")
    axes[-1].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"L(θ)=sin(4πθ)/θ+0.005(θ−1)², start {theta0}, lr {lr}, ρ={rho}, {steps} steps",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)
    plt.close(fig)
    return finals


def figure5_6(out5: Path, out6: Path, *, rhos=(0.0, 0.2, 0.4, 0.8), tilts=(0, 1, 5, 20),
              rho_tsam: float = 0.4, estimator_samples: int = 3, repeats: int = 200,
              seed: int = 0, grid_points: int = 361) -> dict[str, float]:  # fmt: skip
    """Paper Fig. 5 (SAM objective vs ρ) and Fig. 6 (TSAM objective vs t, exact and estimated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = TOY_LOSSES["kink"]
    grid = np.linspace(0.2, 3.8, grid_points)
    minima = {}
    fig, axes = plt.subplots(1, len(rhos), figsize=(3 * len(rhos), 2.8), dpi=90, sharey=True)
    for ax, rho in zip(axes, rhos, strict=True):
        values = np.array([sam_objective("kink", th, rho) for th in grid])
        ax.plot(grid, loss(grid), color="tab:blue", lw=1, label="L")
        ax.plot(grid, values, color="tab:red", lw=1, label="SAM objective")
        i = int(np.argmin(values))
        ax.plot(grid[i], values[i], "o", color="orange")
        minima[f"SAM rho={rho:g}"] = float(grid[i])
        ax.set_title(f"ρ = {rho:g}", fontsize=9)
        ax.set_ylim(-0.2, 2.0)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out5)
    plt.close(fig)

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(tilts), figsize=(3 * len(tilts), 2.8), dpi=90, sharey=True)
    for ax, t in zip(axes, tilts, strict=True):
        exact = np.array([tilted_objective_1d("kink", th, t, rho_tsam) for th in grid])
        eps = rng.uniform(-rho_tsam, rho_tsam, size=(repeats, estimator_samples))
        vals = loss(grid[:, None, None] + eps[None])
        if t == 0:
            est = vals.mean(-1)
        else:
            top = vals.max(-1, keepdims=True)
            est = top[..., 0] + np.log(np.mean(np.exp(t * (vals - top)), -1)) / t
        ax.plot(grid, loss(grid), color="tab:blue", lw=1, label="L")
        ax.plot(grid, exact, color="tab:red", lw=1.2, label="exact L^t")
        ax.plot(grid, est.mean(-1), "--", color="black", lw=1,
                label=f"mean of s={estimator_samples} estimate")  # fmt: skip
        i = int(np.argmin(exact))
        ax.plot(grid[i], exact[i], "o", color="orange")
        minima[f"TSAM t={t:g}"] = float(grid[i])
        ax.set_title(f"t = {t:g}, ρ = {rho_tsam:g}", fontsize=9)
        ax.set_ylim(-0.2, 2.0)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, out6)
    plt.close(fig)
    return minima
