r"""Theorem 1 check: for a GLM the minimiser of :math:`L^t` gets flatter as t grows.

Multinomial logistic regression (a GLM) on a real data set, :math:`\theta \in \mathbb R^{(d+1) \times k}`.
The TSAM objective is replaced by its sample-average approximation with K fixed draws
:math:`\varepsilon_i \sim \mathcal N(0, \sigma^2 I)` (common random numbers, so the objective is
deterministic and smooth):

.. math:: \hat L^t(\theta) = \frac1t \log \frac1K \sum_{i=1}^K e^{t L(\theta + \varepsilon_i)},

minimised to convergence by L-BFGS in float64 from zero.  At each minimiser :math:`\theta_t` the
flatness of the clean loss is measured exactly: the Hessian's trace and top eigenvalue (dense,
``torch.func.hessian``), and the variance (and t-weighted variance) of
:math:`L(\theta_t + \varepsilon)` over fresh draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from tiltedsam._files import save_figure
from tiltedsam.tilt import tilted_objective, tilted_variance


def _design(x: Tensor) -> Tensor:
    x = x.reshape(len(x), -1).to(torch.float64)
    return torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)


def glm_loss(theta: Tensor, design: Tensor, y: Tensor, offsets: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of softmax regression; ``theta`` (d+1, k) or a batch (K, d+1, k).

    ``offsets`` (K, N, k), if given, are added to the logits: with ``offsets = design @ ε_i`` the
    result is :math:`L(\theta + \varepsilon_i)` for each i, at the cost of one ``design @ θ``.
    """
    logits = design @ theta  # (N, k) or (K, N, k)
    if offsets is not None:
        logits = logits + offsets
    flat = logits.reshape(-1, logits.shape[-1])
    target = y.repeat(flat.shape[0] // len(y))
    losses = torch.nn.functional.cross_entropy(flat, target, reduction="none")
    return losses.view(logits.shape[:-1]).mean(-1)


@dataclass
class GLMPoint:
    tilt: float
    clean_loss: float
    tilted_objective: float
    hessian_trace: float
    hessian_top_eigenvalue: float
    noise_variance: float
    tilted_noise_variance: float
    train_accuracy: float
    test_accuracy: float
    lbfgs_grad_norm: float


def _minimise(objective, theta0: Tensor, max_iter: int) -> tuple[Tensor, float]:
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=50, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        value = objective(theta)
        value.backward()
        return value

    grad_norm = float("inf")
    for _ in range(5):
        opt.step(closure)
        closure()
        grad_norm = float(torch.linalg.vector_norm(theta.grad))
        if grad_norm < 1e-6:
            break
    return theta.detach(), grad_norm


def glm_flatness_vs_tilt(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    tilts: Sequence[float] = (0.0, 1.0, 5.0, 20.0, 100.0),
    sigma: float = 0.1,
    draws: int = 64,
    eval_draws: int = 2000,
    seed: int = 0,
    max_iter: int = 200,
) -> list[GLMPoint]:
    """Minimise the SAA TSAM objective for each t; measure the flatness of each minimiser."""
    design, test_design = _design(x_train), _design(x_test)
    k = int(max(int(y_train.max()), int(y_test.max())) + 1)
    gen = torch.Generator().manual_seed(seed)
    noise = sigma * torch.randn(draws, design.shape[1], k, generator=gen, dtype=torch.float64)
    fresh = sigma * torch.randn(eval_draws, design.shape[1], k, generator=gen, dtype=torch.float64)
    offsets = design @ noise  # (K, N, k): the logit shift of each fixed draw, computed once
    theta = torch.zeros(design.shape[1], k, dtype=torch.float64)
    points = []
    for t in tilts:

        def objective(th, t=t):
            return tilted_objective(glm_loss(th, design, y_train, offsets), t)

        theta, grad_norm = _minimise(objective, theta, max_iter)  # warm start from the last t
        shape = theta.shape
        hessian = torch.func.hessian(
            lambda v, shape=shape: glm_loss(v.view(shape), design, y_train)
        )(theta.reshape(-1))
        eigenvalues = torch.linalg.eigvalsh(hessian)
        perturbed = torch.cat([glm_loss(theta.unsqueeze(0) + chunk, design, y_train)
                               for chunk in fresh.split(250)])  # fmt: skip
        with torch.no_grad():
            points.append(GLMPoint(
                tilt=float(t),
                clean_loss=float(glm_loss(theta, design, y_train)),
                tilted_objective=float(objective(theta)),
                hessian_trace=float(torch.trace(hessian)),
                hessian_top_eigenvalue=float(eigenvalues[-1]),
                noise_variance=float(perturbed.var()),
                tilted_noise_variance=float(tilted_variance(perturbed, t)),
                train_accuracy=float(((design @ theta).argmax(1) == y_train).double().mean()),
                test_accuracy=float(((test_design @ theta).argmax(1) == y_test).double().mean()),
                lbfgs_grad_norm=grad_norm,
            ))  # fmt: skip
    return points


def points_table(points: list[GLMPoint]) -> str:
    lines = ["| t | L(θ_t) | L̂^t(θ_t) | tr H | λ_max(H) | var L(θ_t+ε) | t-weighted var | train acc | test acc | ‖∇‖ at end |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in points:
        d = asdict(p)
        lines.append(
            f"| {d['tilt']:g} | {d['clean_loss']:.4f} | {d['tilted_objective']:.4f} | "
            f"{d['hessian_trace']:.4f} | {d['hessian_top_eigenvalue']:.4f} | "
            f"{d['noise_variance']:.5f} | {d['tilted_noise_variance']:.5f} | "
            f"{100 * d['train_accuracy']:.1f} | {100 * d['test_accuracy']:.1f} | {d['lbfgs_grad_norm']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def plot_points(points: list[GLMPoint], path) -> None:
    """Hessian trace, top eigenvalue and clean loss of the minimiser against t (symlog axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tilts = [p.tilt for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), dpi=100)
    series = [("tr H(θ_t)", [p.hessian_trace for p in points]),
              ("λ_max H(θ_t)", [p.hessian_top_eigenvalue for p in points]),
              ("L(θ_t)", [p.clean_loss for p in points])]  # fmt: skip
    for ax, (name, values) in zip(axes, series, strict=True):
        ax.plot(tilts, values, "o-")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("t")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
