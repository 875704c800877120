"""Experiment harness: method specs, the training loop, comparisons and reports."""

from tiltedsam.experiments.compare import compare
from tiltedsam.experiments.train import RunResult, TrainConfig, train_run
from tiltedsam.optim import MethodSpec, parse_method

__all__ = ["MethodSpec", "RunResult", "TrainConfig", "compare", "parse_method", "train_run"]
