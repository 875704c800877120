"""Shared fixtures of the fault-injection suite: tiny data sets, subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tiltedsam.data import ArrayDataset

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def _one_thread_each(one_thread):
    """Every test here with one intra-op thread (``one_thread`` of tests/conftest.py)."""


def tiny_data(n: int = 96, length: int = 12, seed: int = 0) -> ArrayDataset:
    """Three Gaussian blobs as (N, 1, length) inputs; 32 test examples."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, length, generator=g) * 0.5 + y.view(-1, 1, 1).float()
    return ArrayDataset(x[: n - 32], y[: n - 32], x[n - 32 :], y[n - 32 :], 3, "tiny")


def write_mnist(path: Path, train: int = 120, test: int = 40, seed: int = 0) -> Path:
    """A small MNIST-layout ``.npz`` (28x28 uint8, 4 classes) that ``--dataset mnist`` reads."""
    rng = np.random.default_rng(seed)
    y = np.arange(train + test) % 4
    x = (rng.random((train + test, 28, 28)) * 60 + y[:, None, None] * 45).astype(np.uint8)
    np.savez(path, x_train=x[:train], y_train=y[:train].astype(np.uint8), x_test=x[train:],
             y_test=y[train:].astype(np.uint8))  # fmt: skip
    return path


@pytest.fixture
def mnist_file(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "mnist.npz")


def subprocess_env() -> dict[str, str]:
    """The environment of a child ``python``: this checkout's ``src`` first, one thread each
    (so two children on two cores do not fight, and results do not depend on the load)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def cli(*args: str, cwd: Path | None = None, **popen) -> subprocess.Popen:
    """Start ``python -m tiltedsam ARGS`` in a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "tiltedsam", *args],
        env=subprocess_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
