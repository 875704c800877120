"""Issue #19: what ``batched="auto"`` does is said in one sentence, the same in the README, the
method page, the performance page and the docstrings, and the sentence's claims hold."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from tiltedsam import TSAM, make_closure
from tiltedsam.optim import batched
from tiltedsam.samplers import AscentSampler

from .conftest import make_mlp, make_regression

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = (
    'batched="auto" (the default) takes the batched path only on CUDA, with s ≥ 4 (so never at '
    "the default s = 3), s × (trainable parameters) ≤ batched_max_elements (2²⁴ by default) and "
    "a make_closure closure without accumulation, autocast or GradScaler; in every other case, "
    "and whenever the model or sampler cannot be batched, it takes the sequential step."
)


def plain(text: str) -> str:
    """Markdown or reStructuredText as words: no backticks, one space between words."""
    return re.sub(r"\s+", " ", text.replace("`", ""))


@pytest.mark.parametrize(
    "where,text",
    [
        ("README.md", (ROOT / "README.md").read_text()),
        ("docs/methods/tsam.md", (ROOT / "docs/methods/tsam.md").read_text()),
        ("docs/performance.md", (ROOT / "docs/performance.md").read_text()),
        ("TSAM's docstring", TSAM.__doc__),
        ("tiltedsam.optim.batched", batched.__doc__),
    ],
)
def test_the_same_sentence_everywhere(where, text):
    assert SENTENCE in plain(text), f"{where} does not say what batched='auto' does as the others"


def test_the_sentence_matches_the_code():
    assert batched.AUTO_MIN_SAMPLES == 4
    assert batched.DEFAULT_BATCHED_MAX_ELEMENTS == 2**24
    signature = inspect.signature(TSAM)
    assert signature.parameters["num_samples"].default == 3
    assert signature.parameters["batched"].default == "auto"


def test_auto_declines_each_case_the_sentence_names():
    """On a (stand-in) CUDA parameter: s = 3, the element cap, accumulation, autocast, a
    GradScaler and a closure not from make_closure each keep the sequential step."""
    x, y = make_regression(n=8, dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    fake = SimpleNamespace(device=torch.device("cuda"), numel=lambda: 100)
    ctx = SimpleNamespace(params=[fake], scaler=SimpleNamespace(active=False))
    path = batched.BatchedPath("auto", max_elements=1000)
    good = make_closure(model, F.cross_entropy, x, y)
    sampler = AscentSampler()
    assert not path.should_run(ctx, good, sampler, 3)  # s = 3
    assert not path.should_run(ctx, good, sampler, 11)  # 11 x 100 > 1000 elements
    for closure in (
        make_closure(model, F.cross_entropy, x, y, accumulation_steps=2),
        make_closure(model, F.cross_entropy, x, y, autocast_dtype=torch.bfloat16),
        make_closure(model, F.cross_entropy, x, y, grad_scaler=torch.amp.GradScaler("cpu")),
        lambda: F.cross_entropy(model(x), y),
    ):
        assert path.ineligibility(ctx, closure, sampler) is not None
        assert not path.should_run(ctx, closure, sampler, 4)
    cpu = SimpleNamespace(params=list(model.parameters()), scaler=ctx.scaler)
    assert not path.should_run(cpu, good, sampler, 8)  # not on CUDA
