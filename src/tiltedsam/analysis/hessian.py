r"""Hessian of the training loss: Hessian-vector products, top-k eigenvalues, trace.

The loss over a subset split into batches is :math:`L = \sum_b (n_b/N) L_b` (``L_b`` the batch
mean), so :math:`Hv = \sum_b (n_b/N) H_b v` and the batching does not change the result.
Hessian-vector products use double backward
(:math:`Hv = \nabla_\theta \langle \nabla_\theta L, v\rangle`), one per batch.

* :func:`top_eigenvalues`: Lanczos (``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``,
  ``which="LA"``: the largest algebraic eigenvalues), seeded start vector.
* :func:`hutchinson_trace`: :math:`\mathrm{tr} H \approx \frac1m \sum_i z_i^\top H z_i` with
  Rademacher :math:`z_i`, and its standard error.

BatchNorm mode is explicit (``bn_mode``, default ``"eval"``); the model's parameters, buffers and
train/eval mode are the same afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor, nn

from tiltedsam.analysis._model_state import batch_weights, preserved, trainable

LossFn = Callable[[Tensor, Tensor], Tensor]


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    vector: list[Tensor],
    *,
    bn_mode: str = "eval",
) -> list[Tensor]:
    """:math:`Hv` of the batch-size-weighted mean loss, w.r.t. the trainable parameters."""
    batches, weights = batch_weights(batches)
    with preserved(model, bn_mode), torch.enable_grad():  # works inside no_grad() too
        params = trainable(model)
        if len(vector) != len(params):
            raise ValueError(f"vector has {len(vector)} tensors, the model {len(params)} trainable")
        out = [torch.zeros_like(p) for p in params]
        for (x, y), w in zip(batches, weights, strict=True):
            loss = loss_fn(model(x), y)
            # A trainable parameter the loss does not use (an unused head) has H = 0 there.
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True,
                                        materialize_grads=True)  # fmt: skip
            dot = sum((g * v).sum() for g, v in zip(grads, vector, strict=True))
            hv = torch.autograd.grad(dot, params, allow_unused=True, materialize_grads=True)
            for o, h in zip(out, hv, strict=True):
                o.add_(h.detach(), alpha=w)
    return out


def _flatten(tensors: list[Tensor]) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1) for t in tensors]).to(torch.float64).cpu().numpy()


def _unflatten(vector: np.ndarray, like: list[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for p in like:
        chunk = torch.from_numpy(np.ascontiguousarray(vector[start : start + p.numel()]))
        out.append(chunk.view_as(p).to(device=p.device, dtype=p.dtype))
        start += p.numel()
    return out


def hessian_operator(
    model: nn.Module, loss_fn: LossFn, batches: Iterable[tuple[Tensor, Tensor]], *, bn_mode="eval"
) -> LinearOperator:
    """The Hessian as a SciPy ``LinearOperator`` over the flattened trainable parameters.

    Its ``calls`` attribute counts the Hessian-vector products made so far.
    """
    batches = list(batches)
    params = trainable(model)
    dim = sum(p.numel() for p in params)

    def matvec(v: np.ndarray) -> np.ndarray:
        op.calls += 1
        vec = _unflatten(np.asarray(v, dtype=np.float64).reshape(-1), params)
        return _flatten(hessian_vector_product(model, loss_fn, batches, vec, bn_mode=bn_mode))

    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    op.calls = 0
    return op


@dataclass(frozen=True)
class Spectrum:
    """Top eigenvalues (descending) and how they were computed."""

    eigenvalues: list[float]
    num_examples: int
    seed: int
    tol: float
    num_hvps: int


def top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    k: int = 5,
    *,
    seed: int = 0,
    tol: float = 1e-6,
    ncv: int | None = None,
    bn_mode: str = "eval",
) -> Spectrum:
    """The k largest (algebraic) Hessian eigenvalues by Lanczos with a seeded start vector.

    ``ncv`` is the Lanczos basis size (SciPy's default ``max(2k + 1, 20)``); ``num_hvps`` in the
    result counts the Hessian-vector products it took.
    """
    batches = list(batches)
    op = hessian_operator(model, loss_fn, batches, bn_mode=bn_mode)
    if not 1 <= k < op.shape[0]:
        raise ValueError(
            f"k must be in [1, {op.shape[0] - 1}] for {op.shape[0]} parameters, got {k}"
        )
    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    values = eigsh(op, k=k, which="LA", v0=v0, tol=tol, ncv=ncv, return_eigenvectors=False)
    return Spectrum(
        eigenvalues=sorted((float(v) for v in values), reverse=True),
        num_examples=sum(len(y) for _, y in batches),
        seed=seed,
        tol=tol,
        num_hvps=op.calls,
    )


@dataclass(frozen=True)
class TraceEstimate:
    trace: float
    std_error: float
    num_probes: int


def hutchinson_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_probes: int = 100,
    *,
    seed: int = 0,
    bn_mode: str = "eval",
) -> TraceEstimate:
    """Hutchinson's estimate of tr H with Rademacher probes, and its standard error."""
    if num_probes < 2:
        raise ValueError(f"num_probes must be an int >= 2, got {num_probes}")
    batches = list(batches)
    params = trainable(model)
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_probes):
        z = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params]
        hz = hessian_vector_product(model, loss_fn, batches, z, bn_mode=bn_mode)
        samples.append(float(sum((a * b).sum() for a, b in zip(z, hz, strict=True))))
    mean = float(np.mean(samples))
    return TraceEstimate(mean, float(np.std(samples, ddof=1) / math.sqrt(num_probes)), num_probes)
