"""Experiment harness: method specs, the training loop, comparisons and reports."""

from tiltedsam.experiments.compare import compare
from tiltedsam.experiments.methods import MethodSpec, parse_method
from tiltedsam.experiments.train import RunResult, TrainConfig, train_run

__all__ = ["MethodSpec", "RunResult", "TrainConfig", "compare", "parse_method", "train_run"]
