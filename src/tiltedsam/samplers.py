r"""Perturbation samplers: how TSAM draws :math:`\varepsilon_1..\varepsilon_s`.

Each sampler moves the parameters from :math:`\theta` (saved by the optimizer) to
:math:`\theta + \varepsilon_j`, possibly calling the closure on the way; the optimizer then runs
one more pass at :math:`\theta + \varepsilon_j` for :math:`L_j` and :math:`g_j`, and
``finalize`` may still reject the proposal (HMC with Metropolis–Hastings).  A sampler sees the
step through its :class:`~tiltedsam.optim.context.StepContext` ``ctx`` (parameters, θ, per-group
radii, the generator, the guarded ``evaluate``), never the optimizer.  All randomness comes from
the optimizer's own ``torch.Generator`` (``ctx.generator``, saved in its ``state_dict``).

Noise distributions of radius ``r`` (``noise=``):

* ``"gaussian"``: :math:`n \sim \mathcal N(0, I)` over all trainable coordinates, rescaled to norm
  :math:`\min(\|n\|, r)`: what the official code does (``first_step2``); in any real model
  :math:`\|n\| \gg r`, so the norm is exactly ``r`` and the direction uniform on the sphere;
* ``"ball"``: uniform in the ``r``-ball: direction :math:`n/\|n\|`, norm :math:`r\,u^{1/d}`,
  :math:`u \sim U(0,1)`, d the number of trainable coordinates.

With several param groups the direction is drawn jointly and each group's block is scaled with
its own radius (the group's ``noise_radius`` or ``rho``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tiltedsam._tensors import global_norm, no_grad
from tiltedsam._validation import check_bool, check_choice, check_int_at_least, check_positive

if TYPE_CHECKING:
    from tiltedsam.optim.context import Closure, StepContext

NOISE_KINDS = ("gaussian", "ball")


@no_grad
def draw_noise(ctx: StepContext, targets: list[Tensor], radius_key: str, kind: str) -> bool:
    """Fill ``targets`` (aligned with ``ctx.params``) with ξ of radius ``group[radius_key]``
    (see module doc); returns False, drawing nothing, if every radius is 0.

    TSAM's batched path calls it once per sample with fresh tensors laid out like the
    parameters (then stacks them): the same generator calls in the same order and memory
    layout as the sequential path, hence the same ξ.
    """
    radii = ctx.radii(radius_key)
    if all(r == 0.0 for r in radii):
        return False
    generator = ctx.generator
    for x in targets:
        x.normal_(generator=generator)
    norm = global_norm(targets)
    if kind == "ball":
        dim = sum(x.numel() for x in targets)
        u = torch.rand((), generator=generator, device=norm.device, dtype=norm.dtype)
        inv_norm = u ** (1.0 / dim) / norm
    else:
        inv_norm = norm.reciprocal()
    start = 0
    for (_, ps), radius in zip(ctx.groups, radii, strict=True):
        factor = inv_norm * radius
        if kind == "gaussian":
            factor = factor.clamp_(max=1.0)
        torch._foreach_mul_(targets[start : start + len(ps)], factor)
        start += len(ps)
    return True


@no_grad
def add_noise(ctx: StepContext, radius_key: str, kind: str) -> None:
    """Set each trainable ``p`` to ``θ + ξ`` with ξ of radius ``group[radius_key]`` (see module doc).

    The parameters must hold θ on entry; ``ctx.theta`` holds it too.
    """
    params = ctx.params
    if draw_noise(ctx, params, radius_key, kind):
        torch._foreach_add_(params, ctx.theta)


@no_grad
def add_iid_noise(ctx: StepContext, scales: list[float], kind: str = "normal") -> None:
    """Set each trainable ``p`` to ``θ + c·z`` with iid coordinates z ~ N(0, 1) (``"normal"``)
    or z ~ U[−1, 1] (``"cube"``); c = ``scales[k]`` for the k-th group of ``ctx.groups``; no
    rescaling by a global norm.
    """
    for (_, ps, block), scale in zip(ctx.blocks(ctx.theta), scales, strict=True):
        if scale == 0.0:
            continue  # the parameters already hold θ
        for p in ps:
            if kind == "normal":
                p.normal_(generator=ctx.generator)
            else:
                p.uniform_(-1.0, 1.0, generator=ctx.generator)
        torch._foreach_mul_(ps, scale)
        torch._foreach_add_(ps, block)


@no_grad
def ascend(ctx: StepContext, grads: list[Tensor], radius_key: str = "rho") -> None:
    r"""``p += ρ_g · g / ‖g‖`` (global norm over all groups); ``grads`` are scaled in place."""
    inv_norm = global_norm(grads).add_(1e-12).reciprocal_()
    for group, ps, block in ctx.blocks(grads):
        torch._foreach_mul_(block, inv_norm * float(group[radius_key]))
        torch._foreach_add_(ps, block)


class Sampler:
    """Interface: ``perturb`` moves the parameters to θ + ε; ``finalize`` may reject it."""

    name = "base"

    def passes_per_sample(self) -> int:
        """Closure calls per sample, including the optimizer's pass at θ + ε."""
        raise NotImplementedError

    def perturb(self, ctx: StepContext, closure: Closure, sample_tilt: float) -> None:
        """Move ``ctx.params`` from θ to θ + ε (``ctx.evaluate`` for any pass on the way)."""
        raise NotImplementedError

    def finalize(
        self, ctx: StepContext, closure: Closure, loss: Tensor, sample_tilt: float
    ) -> Tensor:
        """Called after the pass at θ + ε; returns the loss of the accepted point."""
        del ctx, closure, sample_tilt
        return loss

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


class AscentSampler(Sampler):
    r"""Paper Algorithm 2: :math:`\theta_j = \theta + \xi_j`, then one normalised ascent step,
    :math:`\varepsilon_j = \xi_j + \rho\,\nabla L(\theta_j)/\|\nabla L(\theta_j)\|`.

    ξ has radius ``noise_radius`` (``noise="gaussian"`` or ``"ball"``).  2 passes per sample.
    This is the official code's ``random1`` sampler (ascent from the noisy point, with the
    gradient there).
    """

    name = "ascent"

    def __init__(self, noise: str = "gaussian") -> None:
        self.noise = check_choice("noise", noise, NOISE_KINDS)

    def passes_per_sample(self) -> int:
        return 2

    def perturb(self, ctx: StepContext, closure: Closure, sample_tilt: float) -> None:
        add_noise(ctx, "noise_radius", self.noise)  # θ_j = θ + ξ_j
        ctx.evaluate(closure)
        ascend(ctx, ctx.grads(), "rho")  # + ρ ∇L(θ_j)/‖∇L(θ_j)‖

    def __repr__(self) -> str:
        return f"AscentSampler(noise={self.noise!r})"


class UniformSampler(Sampler):
    r"""Naive sampler (paper Fig. 8): ε uniform in the ρ-ball (``noise="ball"``) or a Gaussian of
    norm ρ (``noise="gaussian"``), no ascent.  1 pass per sample.

    With tilted weights this is the self-normalised importance-sampling estimator of
    :math:`\nabla L^t` for μ = uniform on the ρ-ball: consistent as s → ∞.
    """

    name = "uniform"

    def __init__(self, noise: str = "ball") -> None:
        self.noise = check_choice("noise", noise, NOISE_KINDS)

    def passes_per_sample(self) -> int:
        return 1

    def perturb(self, ctx: StepContext, closure: Closure, sample_tilt: float) -> None:
        add_noise(ctx, "rho", self.noise)

    def __repr__(self) -> str:
        return f"UniformSampler(noise={self.noise!r})"


class HMCSampler(Sampler):
    r"""Paper Eq. 11: Euler-discretised Hamiltonian dynamics for :math:`p(\varepsilon) \propto e^{\delta L(\theta+\varepsilon)}`.

    :math:`\varepsilon_0` uniform in the ρ-ball, momentum :math:`m_0 \sim \mathcal N(0, \sigma^2 I)`,
    then ``steps`` (N) times :math:`m \leftarrow m + \beta\delta\nabla L(\theta+\varepsilon)`,
    :math:`\varepsilon \leftarrow \varepsilon + \beta m/\sigma^2`, projecting ε back onto the
    ρ-ball.  With ``mh=True`` the candidate is accepted with probability
    :math:`\min\{1, \exp(\delta L(\theta+\varepsilon_N) - \|m_N\|^2/2\sigma^2 - \delta L(\theta+\varepsilon_0) + \|m_0\|^2/2\sigma^2)\}`;
    on rejection :math:`\varepsilon_0` is re-drawn from the saved RNG state and evaluated again
    (one extra pass, and one host synchronisation per sample for the accept decision).

    δ is the optimizer's sampling tilt (``delta * t``).  Passes per sample: N + 1 (+1 on
    rejection).  ``noise_radius`` is not used: ε₀ lies in the ρ-ball as in the paper.
    The paper's practical setting is N = 1 with ``mh=False``.
    """

    name = "hmc"

    def __init__(
        self, steps: int = 1, step_size: float = 0.01, sigma: float = 1.0, mh: bool = False
    ) -> None:
        self.steps = check_int_at_least("steps", steps, 1)
        self.step_size = check_positive("step_size", step_size)
        self.sigma = check_positive("sigma", sigma)
        self.mh = check_bool("mh", mh)
        self.proposals = 0
        self.accepted = 0
        self._rng_state: Tensor | None = None
        self._start_energy: Tensor | None = None

    @property
    def acceptance_rate(self) -> float:
        """Fraction of accepted proposals so far (1.0 when ``mh=False``)."""
        return self.accepted / self.proposals if self.proposals else float("nan")

    def passes_per_sample(self) -> int:
        return self.steps + 1

    @no_grad
    def _project(self, ctx: StepContext) -> None:
        theta = ctx.theta
        params = ctx.params
        eps = torch._foreach_sub(params, theta)
        norm = global_norm(eps)
        for group, _ps, block in ctx.blocks(eps):
            torch._foreach_mul_(block, torch.clamp(float(group["rho"]) / (norm + 1e-12), max=1.0))
        torch._foreach_add_(eps, theta)
        torch._foreach_copy_(params, eps)

    def perturb(self, ctx: StepContext, closure: Closure, sample_tilt: float) -> None:
        self._rng_state = ctx.generator.get_state()
        add_noise(ctx, "rho", "ball")
        params = ctx.params
        momentum = ctx.buffer("momentum")
        with torch.no_grad():
            for m in momentum:
                m.normal_(generator=ctx.generator)
            torch._foreach_mul_(momentum, self.sigma)
            start_kinetic = global_norm(momentum) ** 2 / (2 * self.sigma**2)
        for i in range(self.steps):
            loss = ctx.evaluate(closure)
            if i == 0:
                self._start_energy = sample_tilt * loss - start_kinetic
            with torch.no_grad():
                grads = ctx.grads()
                torch._foreach_mul_(grads, self.step_size * sample_tilt)
                torch._foreach_add_(momentum, grads)
                torch._foreach_add_(params, momentum, alpha=self.step_size / self.sigma**2)
            self._project(ctx)

    def finalize(
        self, ctx: StepContext, closure: Closure, loss: Tensor, sample_tilt: float
    ) -> Tensor:
        self.proposals += 1
        if not self.mh:
            self.accepted += 1
            return loss
        kinetic = global_norm(ctx.buffer("momentum")) ** 2 / (2 * self.sigma**2)
        log_ratio = sample_tilt * loss - kinetic - self._start_energy
        u = torch.rand(
            (), generator=ctx.generator, dtype=torch.float64, device=ctx.generator.device
        )
        if bool(torch.log(u) < log_ratio.double().to(u.device)):
            self.accepted += 1
            return loss
        # Rejected: go back to ε₀ (re-drawn from the saved RNG state) and evaluate it again.
        current = ctx.generator.get_state()
        ctx.generator.set_state(self._rng_state)
        ctx.restore()
        add_noise(ctx, "rho", "ball")
        ctx.generator.set_state(current)
        return ctx.evaluate(closure)

    def state_dict(self) -> dict:
        return {"proposals": self.proposals, "accepted": self.accepted}

    def load_state_dict(self, state: dict) -> None:
        self.proposals = int(state.get("proposals", 0))
        self.accepted = int(state.get("accepted", 0))

    def __repr__(self) -> str:
        return (
            f"HMCSampler(steps={self.steps}, step_size={self.step_size}, sigma={self.sigma}, "
            f"mh={self.mh})"
        )


SAMPLERS: dict[str, type[Sampler]] = {
    "ascent": AscentSampler,
    "uniform": UniformSampler,
    "hmc": HMCSampler,
}


def make_sampler(sampler: str | Sampler, noise: str | None = None) -> Sampler:
    """A sampler from its name (``ascent``, ``uniform``, ``hmc``) or an instance, passed through."""
    if isinstance(sampler, Sampler):
        if noise is not None:
            raise ValueError("noise= applies to a sampler given by name; set it on the instance")
        return sampler
    check_choice("sampler", sampler, SAMPLERS)
    cls = SAMPLERS[sampler]
    if noise is None:
        return cls()
    if cls is HMCSampler:
        raise ValueError("noise= does not apply to sampler='hmc' (ε₀ is uniform in the ρ-ball)")
    return cls(noise=noise)
