r"""TSAM's batched path: the s perturbed models evaluated in one ``torch.func.vmap`` call.

The sequential step (ascent sampler) makes 2s forward+backward passes one after another, each
at one perturbed point.  The batched path stacks the s points into tensors of shape
``(s, *p.shape)`` and computes :math:`L(\theta+\varepsilon_j)` and
:math:`\nabla L(\theta+\varepsilon_j)` for all j in one ``vmap(grad_and_value(loss))`` call per
phase (2 calls per step with ``ascent``, 1 with ``uniform``):

1. :math:`\theta_j = \theta + \xi_j` (the same generator calls, in the same order, as the
   sequential path: the same :math:`\xi_j`);
2. :math:`g_j = \nabla L(\theta_j)` for all j at once, then
   :math:`\theta_j \mathrel{+}= \rho\, g_j/\|g_j\|` (per-sample global norm);
3. :math:`L_j, \nabla L(\theta_j)` for all j at once; the tilted average
   :math:`\sum_j \mathrm{softmax}(tL)_j \nabla L(\theta_j)` is one weighted sum over the stack.

The parameters themselves are never moved (nothing to restore).  The result equals the
sequential step up to float rounding (``tests/test_batched.py`` checks it in float64).

Cost and memory: s copies of the parameters and, per phase, s gradients and the activations
of s models are alive at once (the sequential path keeps 2 parameter-sized buffers).  It pays
where one model leaves the device idle (small models, small batches on a GPU).  On this
project's CPU it took 1.06-2.8x the sequential step's time at s <= 5, and from parity (MLP) to
0.71x (1-D CNN) at s >= 8 on the tiny MNIST-1D models; ResNet-8 took 1.3x at every s
(docs/performance.md).  ``batched="auto"`` (the default) takes the batched path only on CUDA,
with s ≥ 4 (so never at the default s = 3), s × (trainable parameters) ≤
``batched_max_elements`` (2²⁴ by default) and a ``make_closure`` closure without
accumulation, autocast or GradScaler; in every other case, and whenever the model or sampler
cannot be batched, it takes the sequential step.

Requirements (``BatchedPath.ineligibility`` names the first one that fails): a closure from
:func:`~tiltedsam.closures.make_closure` with ``accumulation_steps=1`` and no autocast or
GradScaler; the ``ascent`` or ``uniform`` sampler; ``distributed="off"``; a plain module (not
compiled, not wrapped in DDP) whose parameters include the optimizer's; BatchNorm in training
mode only with ``model=`` given to the optimizer, ``bn_update="first"`` (the first pass of
sample 0 updates the running statistics, as in the sequential path) and a numeric
``momentum``.  A model that ``vmap`` cannot run (a buffer other than BatchNorm's changed in
``forward``, an op without a batching rule) is detected at its first batched step: with
``batched="auto"`` the step falls back to the sequential path (a warning, once per model;
generator and BatchNorm state are restored first, so the step is the sequential one), with
``batched=True`` it raises.

Parameters the loss does not reach keep ``grad = None`` as in the sequential path (the base
optimizer skips them): which ones are reached is found by walking the autograd graph of one
forward pass at θ (buffers copied, so nothing changes; it does draw dropout masks from the
global generator), once per model, train/eval mode, loss function, parameter list and input
shapes.  A model whose reached set depends on the input *values* (mixture-of-experts routing)
needs ``batched=False``.  Differences that remain: dropout masks
are drawn in a different order (same distribution, not the same numbers), and trainable
parameters that the model has but the optimizer does not get no ``.grad`` (the sequential
passes accumulate one into them).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from tiltedsam._norm_layers import norm_layers
from tiltedsam.closures import ModelClosure
from tiltedsam.compat import torch as torch_compat
from tiltedsam.optim.context import StepContext
from tiltedsam.samplers import AscentSampler, Sampler, UniformSampler, draw_noise

# batched="auto": only on CUDA, with s >= AUTO_MIN_SAMPLES and s x (trainable parameter count)
# at most batched_max_elements (default below).  Not measured on a GPU (none was available):
# on CPU one vmap call costs about 3 sequential passes of fixed dispatch work on the MNIST-1D
# models, so where a GPU is launch-bound the batched step (2 calls) should win from 2s > 6
# passes on; the element cap keeps the s stacked copies to 64 MB of float32 parameters.
AUTO_MIN_SAMPLES = 4
DEFAULT_BATCHED_MAX_ELEMENTS = 2**24


class BatchedUnsupported(ValueError):
    """``vmap`` could not evaluate this model (raised after the step's state was restored)."""


def _tracked_norm_modules(model: nn.Module) -> list[nn.Module]:
    return norm_layers(model)


def check_mode(mode: object) -> bool | str:
    """``batched`` must be ``"auto"``, True or False."""
    if not (mode is True or mode is False or mode == "auto"):
        raise ValueError(f"batched must be 'auto', True or False, got {mode!r}")
    return "auto" if isinstance(mode, str) else mode  # type: ignore[return-value]


class BatchedPath:
    """TSAM's ``batched`` option and what the batched path remembers between steps: the models
    ``vmap`` could not run (``"auto"`` then stays sequential for them) and which parameters each
    model's loss reaches.  It sees the step only through the :class:`StepContext`."""

    def __init__(self, mode: bool | str = "auto", max_elements: int = DEFAULT_BATCHED_MAX_ELEMENTS):
        self.mode = check_mode(mode)
        self.max_elements = max_elements
        self.failures: dict[int, str] = {}  # id(model) -> why vmap failed ("auto")
        self.reached_cache: dict[tuple, list[bool]] = {}

    def ineligibility(self, ctx: StepContext, closure: Any, sampler: Sampler) -> str | None:
        """Why the batched path cannot run this step, or None if it can."""
        if not isinstance(closure, ModelClosure):
            return "the closure must come from tiltedsam.make_closure (the loss must be known)"
        if closure.accumulation_steps != 1:
            return "accumulation_steps must be 1"
        if closure.autocast_dtype is not None or closure.grad_scaler is not None:
            return "autocast and GradScaler are not supported"
        if ctx.scaler.active:
            return "grad_scaler is not supported"
        if type(sampler) not in (AscentSampler, UniformSampler):
            return f"sampler must be 'ascent' or 'uniform', got {sampler!r}"
        if ctx.distributed != "off":
            return "distributed must be 'off'"
        model = closure.model
        if torch_compat.is_compiled_module(model) or hasattr(model, "no_sync"):
            return "the model must be a plain nn.Module (not torch.compile'd, not DDP-wrapped)"
        failure = self.failures.get(id(model))
        if failure is not None:
            return failure
        owned = {id(p) for p in model.parameters()}
        if any(id(p) not in owned for p in ctx.params):
            return "every trainable parameter of the optimizer must belong to the closure's model"
        training_bn = [m for m in _tracked_norm_modules(model) if m.training]
        if training_bn:
            registered = {id(b) for b in ctx.batchnorm.buffers}
            own = {id(b) for m in training_bn for b in m.buffers(recurse=False)}
            if ctx.batchnorm.mode != "first" or not own <= registered:
                return (
                    "BatchNorm in training mode needs model=<the model> and bn_update='first' "
                    "on the optimizer"
                )
            if any(m.momentum is None for m in training_bn):
                return "BatchNorm with momentum=None (cumulative average) is not supported"
        return None

    def should_run(
        self, ctx: StepContext, closure: Any, sampler: Sampler, num_samples: int
    ) -> bool:
        """The ``batched`` option resolved for this step (raises if forced but not possible)."""
        if self.mode is False:
            return False
        if self.mode is True:
            reason = self.ineligibility(ctx, closure, sampler)
            if reason is not None:
                raise ValueError(f"batched=True cannot be used here: {reason}")
            return True
        # "auto": the cheap tests first (on CPU this returns at once).
        params = ctx.params
        if num_samples < AUTO_MIN_SAMPLES or not params or params[0].device.type != "cuda":
            return False
        if num_samples * sum(p.numel() for p in params) > self.max_elements:
            return False
        return self.ineligibility(ctx, closure, sampler) is None

    def remember_failure(self, closure: ModelClosure, error: BatchedUnsupported) -> None:
        """``batched="auto"``: never try this model batched again; warn once."""
        self.failures[id(closure.model)] = str(error)
        warnings.warn(
            f"TSAM batched='auto': falling back to the sequential path for this model ({error})",
            RuntimeWarning,
            stacklevel=6,  # remember_failure < TSAM.step < no_grad < step wrappers (2) < caller
        )

    def reached(self, loss: StackedLoss, params: list[Tensor]) -> list[bool]:
        """Which parameters the loss reaches, cached per model, train/eval mode, loss function,
        parameter list and input shapes (a routing that depends on input *values*, as in a
        mixture of experts, is not seen: use ``batched=False`` there)."""
        closure = loss.closure
        key = (
            id(closure.model),
            closure.model.training,
            id(closure.loss_fn),
            tuple(id(p) for p in params),
            _structure(closure.inputs),
            _structure(closure.targets),
        )
        reached = self.reached_cache.get(key)
        if reached is None:
            reached = loss.reached(params)
            if len(self.reached_cache) >= 64:  # a few input shapes are the common case
                self.reached_cache.clear()
            self.reached_cache[key] = reached
        return reached

    @torch.no_grad()
    def losses_and_grads(
        self, ctx: StepContext, closure: ModelClosure, sampler: Sampler, num_samples: int
    ) -> tuple[Tensor, list[Tensor], list[bool]]:
        """The s perturbed losses and gradients of one TSAM step, all samples at once, and
        which parameters the loss reaches.

        Draws ξ_j, ascends (``ascent``), evaluates; writes sample 0's first-pass BatchNorm
        statistics back to the model (``bn_update="first"``).  Counts the passes it replaces
        (``ctx.count``).  If ``vmap`` fails, restores the generator and BatchNorm state and
        raises :class:`BatchedUnsupported`.
        """
        s = num_samples
        params = ctx.params
        loss = StackedLoss(closure, params)
        ascent = isinstance(sampler, AscentSampler)
        radius_key = "noise_radius" if ascent else "rho"
        rng_state = ctx.generator.get_state()
        # Each sample's noise goes into tensors laid out like the parameters (channels_last
        # included): the generator fills memory in order, so this gives the sequential path's ξ.
        samples = []
        for _ in range(s):
            noise = [torch.empty_like(p) for p in params]
            if not draw_noise(ctx, noise, radius_key, sampler.noise):
                torch._foreach_zero_(noise)
            samples.append(noise)
        points = [torch.stack(column) for column in zip(*samples, strict=True)]
        del samples
        for x, p in zip(points, params, strict=True):
            x.add_(p)
        snapshot = [b.clone() for b in loss.buffers]
        buffers = [b.unsqueeze(0).repeat(s, *([1] * b.dim())) for b in loss.buffers]
        try:
            reached = self.reached(loss, params)
            if ascent:
                _, grads = loss(points, buffers)
                for b, stacked in zip(loss.buffers, buffers, strict=True):
                    b.copy_(stacked[0])
                _ascend_stacked(ctx, points, grads, s)
                del grads
            losses, grads = loss(points, buffers)
        except BaseException as error:  # the noise and the buffers as before, whatever failed
            ctx.generator.set_state(rng_state)
            for b, saved in zip(loss.buffers, snapshot, strict=True):
                b.copy_(saved)
            if not isinstance(error, (RuntimeError, NotImplementedError)):
                raise
            first_line = (str(error).splitlines() or [""])[0][:200]
            if isinstance(error, torch.OutOfMemoryError):
                what = (
                    f"it ran out of memory holding {s} stacked copies of the model ({first_line})"
                )
            else:
                what = (f"torch.func.vmap could not run the model ({type(error).__name__}: "
                        f"{first_line})")  # fmt: skip
            raise BatchedUnsupported(what) from error
        if not ascent:
            for b, stacked in zip(loss.buffers, buffers, strict=True):
                b.copy_(stacked[0])
        ctx.count(s * sampler.passes_per_sample())
        return losses, grads, reached


def _ascend_stacked(ctx: StepContext, points: list[Tensor], grads: list[Tensor], s: int) -> None:
    r""":math:`\theta_j \mathrel{+}= \rho\, g_j/\lVert g_j\rVert` for every sample j at once (the
    per-sample global norm, in float32, float64 for float64 models: a half-precision norm
    overflows)."""
    squares = [g.reshape(s, -1).double().square().sum(1) for g in grads]  # 0-dim params too
    wide = torch.float64 if grads[0].dtype == torch.float64 else torch.float32
    inv_norm = (torch.stack(squares).sum(0).sqrt() + 1e-12).reciprocal().to(wide)
    for group, _ps, (x_block, g_block) in _paired_blocks(ctx, points, grads):
        for x, g in zip(x_block, g_block, strict=True):
            shape = (s,) + (1,) * (g.dim() - 1)
            x.add_(g * (inv_norm * float(group["rho"])).view(shape))


def _paired_blocks(ctx: StepContext, a: list[Tensor], b: list[Tensor]):
    for (group, ps, a_block), (_, _, b_block) in zip(ctx.blocks(a), ctx.blocks(b), strict=True):
        yield group, ps, (a_block, b_block)


class StackedLoss:
    """:math:`(L(\\theta_j), \\nabla L(\\theta_j))_{j}` for stacked points ``(s, *p.shape)``."""

    def __init__(self, closure: ModelClosure, params: list[Tensor]) -> None:
        model = closure.model
        wanted = {id(p): i for i, p in enumerate(params)}
        self.names: list[str] = [""] * len(params)
        self.fixed: dict[str, Tensor] = {}
        for name, p in model.named_parameters():
            if id(p) in wanted:
                self.names[wanted[id(p)]] = name
            else:
                self.fixed[name] = p.detach()
        norm_buffers = {id(b) for m in _tracked_norm_modules(model) for b in m.buffers(False)}
        self.buffer_names: list[str] = []
        self.buffers: list[Tensor] = []
        for name, b in model.named_buffers():
            if id(b) in norm_buffers:
                self.buffer_names.append(name)
                self.buffers.append(b)
            else:
                self.fixed[name] = b
        self.closure = closure
        # As closures.call_model: a dict is keywords, a tuple/list positionals, else one input.
        inputs = closure.inputs
        self.args: tuple = ()
        self.kwargs: dict = {}
        if isinstance(inputs, dict):
            self.kwargs = dict(inputs)
        elif isinstance(inputs, tuple | list):
            self.args = tuple(inputs)
        else:
            self.args = (inputs,)

    def _forward(self, state: dict[str, Tensor]) -> Tensor:
        out = functional_call(self.closure.model, state, self.args, self.kwargs)
        loss = self.closure.loss_fn(out, self.closure.targets)
        if loss.dtype not in (torch.float32, torch.float64):
            loss = loss.float()  # as make_closure's closure: half precision summed in float32
        if loss.numel() != 1:
            raise ValueError(
                f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}; "
                "reduce it (e.g. .mean())"
            )
        return loss.reshape(())

    def _loss(self, points: list[Tensor], buffers: list[Tensor]) -> Tensor:
        state = {**self.fixed, **dict(zip(self.names, points, strict=True))}
        state.update(zip(self.buffer_names, buffers, strict=True))
        return self._forward(state)

    def __call__(self, points: list[Tensor], buffers: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Losses ``(s,)`` and gradients ``(s, *p.shape)``; ``buffers`` (stacked BatchNorm
        statistics) are updated in place by training-mode BatchNorm."""
        with torch.enable_grad():
            grads, losses = vmap(grad_and_value(self._loss), randomness="different")(
                points, buffers
            )
        return losses.detach(), [g.detach() for g in grads]

    def reached(self, params: list[Tensor]) -> list[bool]:
        """Which of ``params`` one forward pass at θ reaches (autograd graph walk; every
        buffer copied, so the model's state does not change)."""
        state = {name: b.clone() for name, b in self.closure.model.named_buffers()}
        state.update({n: p for n, p in self.fixed.items() if n not in state})
        state.update(zip(self.names, params, strict=True))
        with torch.enable_grad():
            loss = self._forward(state)
        found: set[int] = set()
        seen: set[int] = set()
        stack = [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            variable = getattr(node, "variable", None)
            if variable is not None:
                found.add(id(variable))
            stack.extend(child for child, _ in node.next_functions)
        return [id(p) in found for p in params]


def _structure(value: Any) -> Any:
    """Shapes, dtypes and keys of a nested input (what the reached set may depend on)."""
    if isinstance(value, Tensor):
        return (tuple(value.shape), value.dtype)
    if isinstance(value, tuple | list):
        return tuple(_structure(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _structure(v)) for k, v in value.items())
    return repr(value)


def finite_samples(losses: Tensor, stacked: list[Tensor]) -> Tensor:
    """Per sample: the loss plus the sum of its gradients' norms is finite (the sequential
    path's check, so both drop the same samples, overflow of huge gradients included)."""
    wide = losses.dtype == torch.float64 or any(g.dtype == torch.float64 for g in stacked)
    dtype = torch.float64 if wide else torch.float32
    total = losses.to(dtype)
    for g in stacked:
        total = total + torch.linalg.vector_norm(g.reshape(len(g), -1), dim=1, dtype=dtype)
    return torch.isfinite(total)


def weighted_sum(weights: Tensor, stacked: list[Tensor]) -> list[Tensor]:
    """:math:`\\sum_j w_j x_j` for each stacked ``x`` of shape ``(s, ...)``."""
    return [torch.tensordot(weights.to(x.dtype), x, dims=1) for x in stacked]


__all__ = [
    "AUTO_MIN_SAMPLES",
    "DEFAULT_BATCHED_MAX_ELEMENTS",
    "BatchedPath",
    "BatchedUnsupported",
    "StackedLoss",
    "finite_samples",
    "weighted_sum",
]
