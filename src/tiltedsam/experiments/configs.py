"""The harness's settings, each default written once: ``DataConfig`` (which data), ``TrainConfig``
(how ``compare``/``sweep``/``study`` train), ``GlueConfig`` (how ``glue`` fine-tunes) and the
config-file reader.

Every field is declared with :func:`option` (default, help, choices); the command line's flags
are generated from these fields (:mod:`tiltedsam.cli_options`), so a default lives here only.
:func:`settings` is what a run's configuration (its key in the run store) records of a config:
every field, except the fields added after run keys were frozen (``since=``) while they hold
their default, so a run stored before such a field existed keeps its key.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tiltedsam._validation import (
    check_choice,
    check_int_at_least,
    check_nonnegative,
    check_positive,
    check_unit_interval,
)
from tiltedsam.data import DATASETS, ArrayDataset, load_dataset
from tiltedsam.data.fingerprint import DataIdentity, dataset_identity, glue_identity
from tiltedsam.data.glue import TASKS
from tiltedsam.models import MODELS
from tiltedsam.optim import BASE_OPTIMIZERS

BASES = tuple(BASE_OPTIMIZERS)
LR_SCHEDULES = ("cosine", "constant")
GLUE_SCHEDULES = ("linear", "cosine", "constant")


def option(default: Any, help: str = "", *, choices: Any = None, flag: str | None = None,
           parse: Any = None, cli: bool = True, since: str | None = None) -> Any:  # fmt: skip
    """A config field: its default, a help line and, for the command line, its allowed values
    (or a function returning them), its flag (default ``--field-name``), a parser for its text
    (default: from the type) and whether it is a flag at all.  ``since`` marks a field added
    after run keys were frozen: :func:`settings` leaves it out while it holds its default."""
    metadata = {"help": help, "choices": choices, "flag": flag, "parse": parse, "cli": cli,
                "since": since}  # fmt: skip
    return field(default=default, metadata=metadata)


def size(text: str) -> int | float:
    """A count (``500``) or a fraction (``0.1``): values >= 1 are counts, whole numbers only
    (``1.5`` is neither, not silently one example)."""
    value = float(text)
    if value >= 1 and not value.is_integer():
        raise ValueError(f"a size is a count (an int >= 1) or a fraction in [0, 1), got {text}")
    return int(value) if value >= 1 else value


def settings(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass that define a run (see the module doc)."""
    values = asdict(config)
    for f in fields(config):
        if f.metadata.get("since") and f.default is not MISSING and values[f.name] == f.default:
            del values[f.name]
    return values


@dataclass(frozen=True)
class DataConfig:
    """Which data a run trains on: a data set, label noise, a training subset, a validation
    split and the seed that draws them (0 for ``compare``/``sweep``; a study's run seed)."""

    dataset: str = option("mnist1d", "data set", choices=DATASETS)
    data_path: str | None = option(None, "data file or folder (default: ../shared/data/ when "
                                   "present; for mnist1d an optional .npz cache)")  # fmt: skip
    label_noise: float = option(0.0, "fraction of flipped labels")
    train_subset: int | None = option(None, "use N training examples (default: all)")
    val_size: int | float = option(0, "validation examples (or fraction)", parse=size)
    seed: int = option(0, cli=False)
    # Studies only (issue #20): CIFAR without crop/flip; text data sets' token budget.
    augment: bool = option(True, cli=False)
    max_length: int = option(64, cli=False)

    def __post_init__(self) -> None:
        if self.dataset.startswith("glue:"):
            task = self.dataset.removeprefix("glue:")
            if task not in TASKS or TASKS[task].regression:
                raise ValueError(
                    f"dataset glue:TASK needs a GLUE classification task, got {task!r}"
                )
        else:
            check_choice("dataset", self.dataset, DATASETS)
        check_unit_interval("label_noise", self.label_noise)
        check_int_at_least("max_length", self.max_length, 1)

    def settings(self) -> dict[str, Any]:
        """What identifies the data in a run's configuration (the path does not); ``augment``
        only when off and ``max_length`` only for text, so earlier run keys stay as they were."""
        out = {"name": self.dataset, "label_noise": self.label_noise,
               "train_subset": self.train_subset, "val_size": self.val_size, "seed": self.seed}  # fmt: skip
        if not self.augment:
            out["augment"] = False
        if self.dataset.startswith("glue:"):
            out["max_length"] = self.max_length
        return out

    def identity(self) -> DataIdentity:
        """What the data's files hold (:mod:`tiltedsam.data.fingerprint`): the run store records
        it with every run and refuses to read a run back for data of another identity."""
        if self.dataset.startswith("glue:"):
            return glue_identity(self._glue_root(), self.dataset.removeprefix("glue:"), None)
        return dataset_identity(self.dataset, self.data_path)

    def _glue_root(self) -> str:
        return self.data_path or "../shared/data/glue"

    def load(self, model: str | None = None) -> ArrayDataset:
        """The data; text (``glue:TASK``) needs the ``minilm_top<k>`` model it is for."""
        if self.dataset.startswith("glue:"):
            data = self._text(model)
        else:
            data = load_dataset(self.dataset, self.data_path, label_noise=self.label_noise,
                                val_size=self.val_size, train_subset=self.train_subset,
                                seed=self.seed)  # fmt: skip
        return data if self.augment else replace(data, augment=None)

    def _text(self, model: str | None) -> ArrayDataset:
        """A GLUE task's frozen-layer features for a ``minilm_top<k>`` model, with the label
        noise and validation split ``load_dataset`` applies (same seeds, same order)."""
        from tiltedsam.data import apply_label_noise, split_validation
        from tiltedsam.data.text_features import load_text_features

        task = self.dataset.removeprefix("glue:")
        if model is None or not model.startswith("minilm_top"):
            raise ValueError(f"data set {self.dataset} needs a minilm_top<k> model, got {model!r}")
        data = load_text_features(task, self._glue_root(),
                                  trainable_layers=int(model.removeprefix("minilm_top")),
                                  max_length=self.max_length, train_subset=self.train_subset,
                                  seed=self.seed)  # fmt: skip
        if self.label_noise:
            noisy = apply_label_noise(data.y_train, self.label_noise, data.num_classes, self.seed)
            data = replace(data, y_train=noisy, y_train_clean=data.y_train)
        return split_validation(data, self.val_size, self.seed) if self.val_size else data


@dataclass(frozen=True)
class TrainConfig:
    """Training settings shared by every method in a comparison."""

    model: str = option("cnn1d", "model architecture", choices=lambda: sorted(MODELS))
    epochs: int = option(40, "training epochs (ESAM1: times its budget)")
    batch_size: int = option(64, "examples per optimizer step")
    lr: float = option(0.1, "learning rate (a method may set its own: sam:lr=0.05)")
    momentum: float = option(0.9, "momentum of base optimizers that take it (SGD, RMSprop)")
    weight_decay: float = option(5e-4, "weight decay of the base optimizer")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy loss")
    lr_schedule: str = option(
        "cosine", "learning-rate schedule over all steps", choices=LR_SCHEDULES
    )
    base: str = option("sgd", "the base optimizer every method wraps", choices=BASES,
                       since="issue #18")  # fmt: skip

    def __post_init__(self) -> None:
        check_choice("model", self.model, sorted(MODELS))
        check_int_at_least("epochs", self.epochs, 1)
        check_int_at_least("batch_size", self.batch_size, 1)
        check_positive("lr", self.lr)
        check_nonnegative("momentum", self.momentum)
        check_nonnegative("weight_decay", self.weight_decay)
        check_unit_interval("label_smoothing", self.label_smoothing)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("base", self.base, BASES)

    def base_kwargs(self) -> dict[str, Any]:
        """The base optimizer's settings shared by every method of a run."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def shared_options(self) -> dict[str, Any]:
        """The settings a method spec may override, as a run's full options record them."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}


@dataclass(frozen=True)
class GlueConfig:
    """Settings shared by every run of a GLUE table (the method spec and seed vary)."""

    task: str = option("RTE", "RTE, MRPC, STS-B, SST-2, CoLA, QNLI, ...")
    trainable_layers: int = option(1, "top layers trained")
    max_length: int = option(128, "tokens per example (longer ones are truncated)")
    epochs: int = option(3, "training epochs")
    batch_size: int = option(32, "examples per optimizer step")
    lr: float = option(1e-4, "learning rate (a grid entry may set its own: erm:lr=3e-4)")
    base: str = option("adamw", "the base optimizer every method wraps", choices=BASES)
    momentum: float = option(0.9, "momentum of base optimizers that take it (SGD, RMSprop)")
    weight_decay: float = option(0.01, "not applied to biases and LayerNorm weights")
    lr_schedule: str = option(
        "linear", "learning-rate schedule after the warm-up", choices=GLUE_SCHEDULES
    )
    warmup: float = option(0.1, "fraction of steps warmed up (linearly from 0)")
    val_fraction: float = option(0.1, "fraction of GLUE train held out for selection")
    split_seed: int = option(0, "seed of the train/validation split")
    train_subset: int | None = option(
        None, "use N training examples, a seeded subset (default: all)"
    )
    group_by_length: bool = option(True, "turn off the default length-grouped batches (less "
                                   "padding, order still random): plain random batches")  # fmt: skip

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        for name in ("epochs", "batch_size", "max_length"):
            check_int_at_least(name, getattr(self, name), 1)
        check_int_at_least("trainable_layers", self.trainable_layers, 0)
        check_positive("lr", self.lr)
        check_nonnegative("momentum", self.momentum)
        check_nonnegative("weight_decay", self.weight_decay)
        check_choice("lr_schedule", self.lr_schedule, GLUE_SCHEDULES)
        check_choice("base", self.base, BASES)
        if check_unit_interval("warmup", self.warmup) == 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if check_unit_interval("val_fraction", self.val_fraction) in (0, 1):
            raise ValueError(
                f"val_fraction must be in (0, 1): selection needs a validation split, "
                f"got {self.val_fraction}"
            )
        if self.train_subset is not None:
            check_int_at_least("train_subset", self.train_subset, 1)

    def base_kwargs(self) -> dict[str, Any]:
        """The base optimizer's settings shared by every method (momentum: SGD only)."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def shared_options(self) -> dict[str, Any]:
        """The settings a method spec may override, as a run's full options record them."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}


def load_config_file(path: str | Path) -> dict:
    """Options from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file, keys as the long flags
    with ``-`` or ``_`` (``batch-size`` or ``batch_size``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.suffix == ".toml":
        import tomllib

        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    else:
        raise ValueError(f"config file must end in .toml, .yaml or .yml, got {path.name}")
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a table of options at the top level")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


__all__ = ["DataConfig", "GlueConfig", "TrainConfig", "load_config_file", "option", "settings"]
