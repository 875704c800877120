"""Settings are written once: the config dataclasses hold the defaults and the command line's
flags are generated from them; the base optimizer is a choice of the harness, and a run stored
before that choice existed keeps its key."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
import torch

from tiltedsam.cli import build_parser
from tiltedsam.cli_options import Parser, add_config_options, config_from_args
from tiltedsam.experiments import train as train_module
from tiltedsam.experiments.configs import DataConfig, GlueConfig, TrainConfig, option, settings
from tiltedsam.optim import parse_method

from .reliability.conftest import tiny_data


@pytest.mark.parametrize(("command", "cls", "overrides"), [
    ("compare", TrainConfig, {}), ("sweep", TrainConfig, {}), ("compare", DataConfig, {}),
    ("sweep", DataConfig, {"val_size": 500}), ("glue", GlueConfig, {}),
])  # fmt: skip
def test_every_flag_defaults_to_its_dataclass_field(command, cls, overrides):
    parser = build_parser()
    args = parser.parse_args([command])
    sub = parser.commands[command]
    for f in fields(cls):
        if f.metadata.get("cli", True):
            dest = f"no_{f.name}" if f.default is True else f.name
            assert dest in sub.options, f"{command} has no flag for {cls.__name__}.{f.name}"
    built = config_from_args(cls, args)
    assert built == cls(**overrides)


def test_a_new_field_becomes_a_flag_with_its_default_and_type():
    @dataclass(frozen=True)
    class Settings:
        width: int = option(8, "hidden width")
        rate: float | None = option(None)
        fancy: bool = option(True, "use the fancy path")
        mode: str = option("a", choices=("a", "b"))

    parser = Parser()
    add_config_options(parser, Settings)
    assert config_from_args(Settings, parser.parse_args([])) == Settings()
    got = config_from_args(Settings, parser.parse_args(["--width", "3", "--rate", "0.5",
                                                        "--no-fancy", "--mode", "b"]))  # fmt: skip
    assert got == Settings(width=3, rate=0.5, fancy=False, mode="b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])


def test_the_base_optimizer_is_a_choice_and_the_default_keeps_old_keys(monkeypatch):
    assert "base" not in settings(TrainConfig())  # a run stored before the choice: same key
    assert settings(TrainConfig(base="adamw"))["base"] == "adamw"
    built = []
    real = train_module.build_optimizer

    def recording(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "build_optimizer", recording)
    data = tiny_data()
    for base in ("sgd", "adamw"):
        config = TrainConfig(model="mlp", epochs=1, batch_size=32, lr=1e-3, base=base)
        train_module.train_run(parse_method("sam"), data, config, 0, progress=False)
    sgd, adamw = (opt.base_optimizer for opt in built)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.9
    assert type(adamw) is torch.optim.AdamW and "momentum" not in adamw.param_groups[0]
    with pytest.raises(ValueError, match="base must be one of 'sgd', 'adam', 'adamw'"):
        TrainConfig(base="lion")
