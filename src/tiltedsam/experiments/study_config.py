"""The settings of one study (``tiltedsam study CONFIG``): data, training, each method's tuning
stages, the seeds, the t-curve and the flatness pass; read from a TOML/YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tiltedsam._validation import check_unit_interval
from tiltedsam.experiments.configs import DataConfig, TrainConfig, load_config_file
from tiltedsam.experiments.train import check_seeds
from tiltedsam.optim import METHODS, canonical_name


@dataclass(frozen=True)
class StudyConfig:
    """One regime: data, training settings, each method's tuning stages, seeds and the t-curve."""

    name: str
    search: dict[str, list[str]]
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "mnist"
    data_path: str | None = None
    label_noise: float = 0.0
    train_subset: int | None = None
    val_size: int | float = 1000
    select_seeds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    tcurve: tuple[float, ...] = (0.0, 1.0, 5.0, 20.0, 100.0)
    tcurve_seeds: tuple[int, ...] | None = None
    flatness_seeds: tuple[int, ...] | None = None  # None: first three report seeds; (): skip
    flatness: dict[str, int] | None = None  # cost of the flatness pass: subset, draws, probes
    augment: bool = True  # False: no training-time augmentation (CIFAR's crop and flip)
    max_length: int = 64  # text ("glue:TASK" data sets): tokens kept per example
    equal_budget: bool = True

    def __post_init__(self) -> None:
        if not self.search:
            raise ValueError("search must name at least one method with its tuning stages")
        for method, stages in self.search.items():
            if method not in METHODS:
                hint = (
                    f" (write {canonical_name(method)!r})"
                    if canonical_name(method) in METHODS
                    else ""
                )
                raise ValueError(f"search: unknown method {method!r}{hint}")
            if isinstance(stages, str) or not all(isinstance(s, str) for s in stages):
                raise ValueError(f"search.{method} must be a list of grid strings")
        check_unit_interval("label_noise", self.label_noise)
        check_seeds(self.select_seeds, "select_seeds")
        check_seeds(self.seeds)
        if set(self.select_seeds) & set(self.seeds):
            raise ValueError(
                f"select_seeds {list(self.select_seeds)} and seeds {list(self.seeds)} overlap: "
                "the reported runs must not be the ones the configuration was chosen on"
            )
        if self.tcurve_seeds is not None:
            check_seeds(self.tcurve_seeds, "tcurve_seeds")
        if self.flatness_seeds:  # () or [] skips the flatness phase
            check_seeds(self.flatness_seeds, "flatness_seeds")
        for key in ("tcurve_seeds", "flatness_seeds"):
            chosen_on = set(getattr(self, key) or ()) & set(self.select_seeds)
            if chosen_on:
                raise ValueError(
                    f"{key} {list(getattr(self, key))} include select_seeds {sorted(chosen_on)}: "
                    "measure on report seeds, not on those the configuration was chosen on"
                )
        from tiltedsam.experiments.study_analysis import analysis_settings

        analysis_settings(self.flatness)  # a bad key or count fails before anything trains

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyConfig:
        """From a TOML/YAML table: the training settings at the top level, as in ``sweep``."""
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        train_keys = {f.name for f in fields(TrainConfig)}
        own = {f.name for f in fields(cls)} - {"train"}
        unknown = sorted(set(values) - train_keys - own)
        if unknown:
            raise ValueError(
                f"unknown study setting(s) {unknown}; allowed: {sorted(train_keys | own)}"
            )
        train = TrainConfig(**{k: v for k, v in values.items() if k in train_keys})
        kwargs = {k: v for k, v in values.items() if k in own}
        for key in ("select_seeds", "seeds", "tcurve_seeds", "flatness_seeds"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        if "tcurve" in kwargs:
            kwargs["tcurve"] = tuple(float(t) for t in kwargs["tcurve"])
        kwargs["search"] = {k: list(v) for k, v in kwargs.get("search", {}).items()}
        return cls(train=train, **kwargs)

    def data(self, seed: int) -> DataConfig:
        """The data of the runs with ``seed``: it fixes the subset, the noise and the split."""
        return DataConfig(dataset=self.dataset, data_path=self.data_path,
                          label_noise=self.label_noise, train_subset=self.train_subset,
                          val_size=self.val_size, seed=seed, augment=self.augment,
                          max_length=self.max_length)  # fmt: skip

    def data_settings(self, seed: int) -> dict[str, Any]:
        return self.data(seed).settings()


def load_study_config(path: str | Path) -> StudyConfig:
    return StudyConfig.from_dict(load_config_file(path))
