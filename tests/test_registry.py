"""The method table: every entry agrees with its class, names and options fail clearly, and
everything that lists methods (create_optimizer, specs, the harness, the bench, the docs) reads
the same table."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

from tiltedsam.optim import (
    METHODS,
    MethodInfo,
    PerturbationOptimizer,
    UnknownOptionError,
    build_optimizer,
    create_optimizer,
    method_table,
    parse_method,
    register_method,
)
from tiltedsam.optim import registry as registry_module

from .conftest import closure_for, make_mlp, make_regression

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(METHODS)


def _signature_names(cls: type) -> set[str]:
    """Every named constructor parameter up the MRO (what a keyword may reach)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not object:
            names |= set(inspect.signature(init).parameters)
    return names


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_builds_its_class_with_its_defaults(name):
    info = METHODS[name]
    model = make_mlp(dtype=torch.float32)
    options = {k: v for k, v in info.defaults.items() if k != "budget"}
    opt = create_optimizer(name, model.parameters(), lr=0.1, **options)
    assert isinstance(opt, info.cls or torch.optim.SGD)
    for key, value in info.fixed.items():  # fixed keywords reach the instance
        got = opt.defaults[key] if key in opt.defaults else getattr(opt, key)
        assert got == value or getattr(got, "name", None) == value
    assert info.options <= _signature_names(info.cls or torch.optim.SGD) | set(
        PerturbationOptimizer.SHARED_OPTIONS
    )
    assert set(options) <= info.options, "every harness default is an option of the class"


@pytest.mark.parametrize("name", NAMES)
def test_derived_flags_match_what_the_class_does(name):
    info = METHODS[name]
    model = make_mlp(dtype=torch.float32)
    x, y = make_regression(dtype=torch.float32)
    if info.seeded:  # the seed is taken and changes the perturbation
        a = create_optimizer(name, model.parameters(), lr=0.1, seed=1)
        b = create_optimizer(name, model.parameters(), lr=0.1, seed=2)
        assert not torch.equal(a.generator.get_state(), b.generator.get_state())
    else:
        with pytest.raises(UnknownOptionError, match=f"unknown option 'seed' for method {name}"):
            create_optimizer(name, model.parameters(), lr=0.1, seed=1)
    if info.scheduled:
        opt = create_optimizer(name, model.parameters(), lr=0.1, tilt=2.0,
                               tilt_schedule="warmup", total_steps=4)  # fmt: skip
        opt.step(closure_for(model, x, y))
        assert opt.tilt == 0.5  # step 1 of 4: t/4


def test_unknown_option_names_the_method_lists_its_options_and_suggests():
    params = make_mlp(dtype=torch.float32).parameters()
    with pytest.raises(TypeError, match=r"unknown option 'tilt' for method sam; its options are "
                       r".*rho.*SGD's included"):  # fmt: skip
        create_optimizer("sam", params, lr=0.1, tilt=5.0)
    with pytest.raises(ValueError, match=r"unknown option 'tilte' .*did you mean 'tilt'\?"):
        create_optimizer("tsam", params, lr=0.1, tilte=5)
    with pytest.raises(UnknownOptionError, match="asam fixes adaptive=True"):
        create_optimizer("asam", params, lr=0.1, adaptive=False)
    with pytest.raises(ValueError, match=r"unknown method 'tsma'.*did you mean 'tsam'\?"):
        create_optimizer("tsma", params, lr=0.1)
    with pytest.raises(ValueError, match=r"unknown option 'rho' for method erm; its options "
                       r"are .*max_grad_norm.*nonfinite"):  # fmt: skip
        create_optimizer("erm", params, lr=0.1, rho=0.05)


@pytest.mark.parametrize("spelling", ["tsam-resample", "TSAM-RESAMPLE", "tsam_resample",
                                      " Tsam_Resample "])  # fmt: skip
def test_aliases_are_read_the_same_everywhere(spelling):
    params = make_mlp(dtype=torch.float32).parameters()
    assert type(create_optimizer(spelling, params, lr=0.1)).__name__ == "TSAMResample"
    assert parse_method(f"{spelling}:tilt=2").name == "tsam-resample"


def test_build_optimizer_applies_the_table_defaults_the_run_settings_and_overrides():
    model = make_mlp(dtype=torch.float32)
    opt = build_optimizer("tsam:tilt=5,lr=0.02", model.parameters(), base="sgd",
                          base_kwargs={"lr": 0.1, "momentum": 0.8, "weight_decay": 0.0},
                          seed=3, total_steps=10, model=model)  # fmt: skip
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], opt.num_samples, opt.tilt) == (0.02, 0.8, 3, 5.0)
    adamw = build_optimizer("sam", model.parameters(), base="adamw",
                            base_kwargs={"lr": 0.1, "momentum": 0.9})  # fmt: skip
    assert "momentum" not in adamw.param_groups[0]  # a setting AdamW does not take is dropped
    with pytest.raises(ValueError, match=r"'sam:momentum=0.5': unknown option 'momentum'"):
        build_optimizer("sam:momentum=0.5", model.parameters(), base="adamw")
    with pytest.raises(ValueError, match=r"'sam:lr=0': option lr must be a number in \(0, inf\)"):
        build_optimizer("sam:lr=0", model.parameters(), base_kwargs={"lr": 0.1})
    with pytest.raises(ValueError, match=r"esam1 budget must be an int >= 1, got 0"):
        build_optimizer("esam1:budget=0", model.parameters(), base_kwargs={"lr": 0.1})
    # a tilt schedule gets the run's step count (it failed before: issue #17)
    warm = build_optimizer("tsam:tilt_schedule=warmup,tilt=4", model.parameters(),
                           base_kwargs={"lr": 0.1}, total_steps=8)  # fmt: skip
    assert warm.schedule.total_steps == 8


@pytest.fixture
def restored_table():
    saved = dict(METHODS)
    yield
    METHODS.clear()
    METHODS.update(saved)


def test_a_registered_method_is_known_everywhere(restored_table):
    info = register_method(MethodInfo("sam-wide", METHODS["sam"].cls, summary="SAM, ρ = 0.5",
                                      passes="2", defaults={"rho": 0.5}))  # fmt: skip
    assert registry_module.METHODS["sam-wide"] is info
    model = make_mlp(dtype=torch.float32)
    opt = build_optimizer("sam-wide", model.parameters(), base_kwargs={"lr": 0.1})
    assert opt.defaults["rho"] == 0.5
    assert "`sam-wide`" in registry_module.method_table()
    with pytest.raises(ValueError, match="already registered"):
        register_method(info)
    with pytest.raises(ValueError, match="lower case"):
        register_method(MethodInfo("Wide", None))


def test_the_docs_method_table_is_rendered_from_the_table():
    table = method_table()
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(METHODS)
    assert all(f"`{name}`" in row for name, row in zip(METHODS, rows, strict=True))
    assert "`rhos=0.025/0.05/0.1`" in table and "`budget=3`" in table
    spec = importlib.util.spec_from_file_location("hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (ROOT / "docs" / "methods" / "index.md").read_text()
    assert hooks.METHOD_TABLE in page
    rendered = hooks.on_page_markdown(page, None, None, None)
    assert table.rstrip("\n") in rendered and hooks.METHOD_TABLE not in rendered
