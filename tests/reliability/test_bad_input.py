"""Bad input, each a clear error naming the parameter or file (and its allowed range): optimizer
constructors, ``step``, the harness, the CLI and config files.  CLI errors exit with status 2
and print ``error: ...``, never a traceback."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiltedsam import SAM, TSAM
from tiltedsam.cli import main
from tiltedsam.data import ArrayDataset
from tiltedsam.experiments import TrainConfig, parse_method, train_run
from tiltedsam.optim import ESAM2, create_optimizer

from ..conftest import make_mlp, make_regression
from .conftest import tiny_data


def _params():
    return make_mlp(dtype=torch.float32).parameters()


# --------------------------------------------------------------------------- constructors
CONSTRUCTORS = {
    "tilt_negative": (lambda: TSAM(_params(), torch.optim.SGD, tilt=-1.0, lr=0.1),
                      ValueError, r"tilt t must be in \[0, inf\], got -1"),
    "tilt_string": (lambda: TSAM(_params(), torch.optim.SGD, tilt="5", lr=0.1),
                    TypeError, r"tilt t must be a real number, got str '5'"),
    "num_samples_bool": (lambda: TSAM(_params(), torch.optim.SGD, num_samples=True, lr=0.1),
                         TypeError, r"num_samples must be an int >= 1, got bool"),
    "nonfinite_unknown": (lambda: TSAM(_params(), torch.optim.SGD, nonfinite="ignore", lr=0.1),
                          ValueError, r"nonfinite must be one of .*'skip_sample', got 'ignore'"),
    "skip_sample_not_for_sam": (lambda: SAM(_params(), torch.optim.SGD, nonfinite="skip_sample", lr=0.1),
                                ValueError, r"nonfinite must be one of 'raise', 'skip', 'unchecked'"),
    "rho_nan": (lambda: SAM(_params(), torch.optim.SGD, rho=math.nan, lr=0.1),
                ValueError, r"rho must not be NaN"),
    "rhos_empty": (lambda: ESAM2(_params(), torch.optim.SGD, rhos=(), lr=0.1),
                   ValueError, r"rhos must be a non-empty sequence"),
    "unknown_optimizer": (lambda: create_optimizer("adamax", _params()),
                          ValueError, r"unknown method 'adamax': the method name must be one of erm, sam, "),
    "unknown_base": (lambda: create_optimizer("sam", _params(), base="lbfgs", lr=0.1),
                     ValueError, r"base must be one of .*got 'lbfgs'"),
    "base_instance": (lambda: TSAM(_params(), torch.optim.SGD(_params(), lr=0.1), lr=0.1),
                      TypeError, r"base_optimizer_cls must be an optimizer class"),
    "no_parameters": (lambda: TSAM([], torch.optim.SGD, lr=0.1),
                      ValueError, r"empty parameter list"),
    "lr_negative": (lambda: TSAM(_params(), torch.optim.SGD, lr=-0.1),
                    ValueError, r"Invalid learning rate: -0.1"),
}  # fmt: skip


@pytest.mark.parametrize("case", CONSTRUCTORS)
def test_constructor_errors_name_the_parameter(case):
    make, error, match = CONSTRUCTORS[case]
    with pytest.raises(error, match=match):
        make()


# --------------------------------------------------------------------------- step
def _step_with(returning):
    x, y = make_regression(dtype=torch.float32)
    model = make_mlp(dtype=torch.float32)
    opt = TSAM(model.parameters(), torch.optim.SGD, lr=0.1)

    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return returning(loss)

    opt.step(closure)


STEPS = {
    "no_closure": (lambda: TSAM(_params(), torch.optim.SGD, lr=0.1).step(),
                   TypeError, r"step\(\) requires a closure"),
    "closure_not_callable": (lambda: TSAM(_params(), torch.optim.SGD, lr=0.1).step(3),
                             TypeError, r"closure must be callable, got int"),
    "closure_returns_string": (lambda: _step_with(lambda loss: "low"),
                               TypeError, r"closure must return a scalar loss tensor"),
    "closure_returns_vector": (lambda: _step_with(lambda loss: loss.expand(3)),
                               ValueError, r"closure must return a scalar loss, got shape \(3,\)"),
}  # fmt: skip


@pytest.mark.parametrize("case", STEPS)
def test_step_errors_say_what_the_closure_must_do(case):
    make, error, match = STEPS[case]
    with pytest.raises(error, match=match):
        make()


# --------------------------------------------------------------------------- harness
def test_model_and_data_shapes_that_do_not_match():
    with pytest.raises(
        ValueError,
        match=r"model 'cnn2d' does not fit data set 'tiny' \(inputs of shape \(1, 12\)\)",
    ):
        train_run(parse_method("erm"), tiny_data(), TrainConfig(model="cnn2d", epochs=1), 0, progress=False)  # fmt: skip


def test_empty_data_set():
    x = torch.zeros(0, 1, 12)
    with pytest.raises(ValueError, match="e: the train split is empty"):
        ArrayDataset(x, torch.zeros(0, dtype=torch.long), x[:0], x[:0, 0, 0].long(), 3, "e")


@pytest.mark.parametrize(
    "field,value,error,match",
    [
        ("epochs", 2.5, TypeError, r"epochs must be an int >= 1, got float 2.5"),
        ("momentum", -0.5, ValueError, r"momentum must be in \[0, inf\)"),
        ("label_smoothing", 1.5, ValueError, r"label_smoothing must be in \[0, 1\]"),
        ("model", "vgg", ValueError, r"model must be one of 'cnn1d', .*got 'vgg'"),
    ],
)
def test_train_config_fields(field, value, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**{field: value})


# --------------------------------------------------------------------------- CLI and config files
def _cli(capsys, *args):
    try:
        status = main(list(args))
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def _mnist_args(path):
    return ["compare", "--dataset", "mnist", "--data-path", str(path), "--no-progress",
            "--epochs", "1", "--methods", "erm"]  # fmt: skip


CLI = {
    "epochs_zero": (["compare", "--epochs", "0"], r"epochs must be an int >= 1, got 0"),
    "label_smoothing": (["compare", "--label-smoothing", "2"], r"label_smoothing must be in \[0, 1\]"),
    "unknown_method": (["compare", "--methods", "adahessian"], r"unknown method 'adahessian'"),
    "unknown_method_option": (["compare", "--methods", "tsam:tilte=5"],
                              r"unknown option 'tilte' for method tsam; its options are .*tilt,"),
    "method_option_range": (["compare", "--methods", "erm", "tsam:num_samples=0"],
                            r"'tsam:num_samples=0': num_samples must be an int >= 1, got 0"),
    "seeds_empty": (["compare", "--seeds", ","], r"--seeds must list at least one int >= 0"),
    "seeds_not_ints": (["compare", "--seeds", "a,b"], r"--seeds must be comma-separated ints"),
    "workers_zero": (["sweep", "--workers", "0"], r"workers must be an int >= 1, got 0"),
    "grid_empty_value": (["sweep", "--grid", "erm", "tsam:tilt=1//5"],
                         r"grid 'tsam:tilt=1//5': an empty value"),
    "val_size_not_whole": (["compare", "--val-size", "1.5"], r"argument --val-size: invalid size"),
    "toy_steps_zero": (["toy", "--steps", "0"], r"argument --steps: must be an int >= 1, got 0"),
    "glm_draws_zero": (["glm", "--draws", "0"], r"argument --draws: must be an int >= 1, got 0"),
    "glm_sigma_negative": (["glm", "--sigma", "-1"], r"argument --sigma: must be a finite number >= 0"),
}  # fmt: skip


@pytest.mark.parametrize("case", CLI)
def test_cli_errors_exit_2_and_name_the_option(case, capsys, tmp_path):
    args, match = CLI[case]
    status, err = _cli(capsys, *args, "--out", str(tmp_path / "o"))
    assert status == 2 and "error:" in err
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "o" / "runs").exists(), "nothing was trained"


def test_cli_data_options_out_of_range(capsys, mnist_file):
    status, err = _cli(capsys, *_mnist_args(mnist_file), "--label-noise", "1.5")
    assert status == 2 and "label_noise must be in [0, 1], got 1.5" in err
    status, err = _cli(capsys, *_mnist_args(mnist_file), "--train-subset", "500")
    assert status == 2 and "train_subset must be in [1, 120], got 500" in err
    status, err = _cli(capsys, *_mnist_args(mnist_file), "--val-size", "120")
    assert status == 2 and "validation size must leave both splits non-empty" in err


def test_cli_data_file_errors_name_the_file(capsys, tmp_path):
    missing = tmp_path / "none.npz"
    status, err = _cli(capsys, *_mnist_args(missing))
    assert status == 2 and f"MNIST file not found: {missing}" in err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 64)
    status, err = _cli(capsys, *_mnist_args(junk))
    assert status == 2 and f"{junk}: not a readable .npz file" in err
    empty = tmp_path / "empty.npz"
    zero = np.zeros((0, 28, 28), np.uint8)
    np.savez(empty, x_train=zero, y_train=zero[:, 0, 0], x_test=zero, y_test=zero[:, 0, 0])
    status, err = _cli(capsys, *_mnist_args(empty))
    assert status == 2 and f"{empty}: mnist: the train split is empty" in err
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=zero)
    status, err = _cli(capsys, *_mnist_args(partial))
    assert status == 2 and "missing arrays ['x_test', 'y_test', 'y_train']" in err


def test_cli_model_that_does_not_fit_the_data(capsys, mnist_file, tmp_path):
    status, err = _cli(capsys, *_mnist_args(mnist_file), "--model", "cnn1d", "--out", str(tmp_path))
    assert status == 2 and "model 'cnn1d' does not fit data set 'mnist'" in err
    # a BatchNorm model on 1-D data raises ValueError (wrong rank), not RuntimeError
    status, err = _cli(capsys, "compare", "--model", "resnet8", "--epochs", "1", "--no-progress",
                       "--out", str(tmp_path / "rn"))  # fmt: skip
    assert status == 2 and "model 'resnet8' does not fit data set 'mnist1d'" in err


CONFIGS = {
    "unknown_key": ("c.toml", "epochs = 1\nlearning_rate = 0.1\n",
                    r"c\.toml: unknown key\(s\) \['learning_rate'\]; allowed: .*'lr'"),
    "string_for_int": ("c.toml", 'epochs = "ten"\n',
                       r"c\.toml: key 'epochs' \(--epochs\) must be an int, got 'ten'"),
    "float_for_int": ("c.toml", "batch-size = 6.5\n",
                      r"key 'batch_size' \(--batch-size\) must be an int, got 6.5"),
    "bool_for_number": ("c.yaml", "lr: true\n", r"c\.yaml: key 'lr' \(--lr\) must be a number"),
    "choice": ("c.toml", 'model = "vgg"\n',
               r"key 'model' \(--model\) must be one of \['cnn1d', .*got 'vgg'"),
    "bad_toml": ("c.toml", "epochs = \n", r"c\.toml: not valid TOML"),
    "bad_yaml": ("c.yaml", "epochs: [1\n", r"c\.yaml: not valid YAML"),
    "not_a_table": ("c.yaml", "- 1\n- 2\n", r"c\.yaml: expected a table of options"),
    "flag_type": ("c.toml", 'no-progress = "yes"\n',
                  r"key 'no_progress' \(--no-progress\) must be true or false"),
    "seeds_list": ("c.toml", 'seeds = ["a"]\n', r"key 'seeds' \(--seeds\).*comma-separated ints"),
    "wrong_suffix": ("c.json", "{}", r"config file must end in \.toml, \.yaml or \.yml"),
}  # fmt: skip


@pytest.mark.parametrize("case", CONFIGS)
def test_config_file_errors_name_the_file_and_key(case, capsys, tmp_path):
    name, text, match = CONFIGS[case]
    (tmp_path / name).write_text(text)
    status, err = _cli(capsys, "compare", "--config", str(tmp_path / name))
    assert status == 2 and "error:" in err
    assert __import__("re").search(match, err), err


def test_missing_config_file(capsys, tmp_path):
    status, err = _cli(capsys, "compare", "--config", str(tmp_path / "none.toml"))
    assert status == 2 and f"config file not found: {tmp_path / 'none.toml'}" in err


def test_good_config_values_are_converted_like_flags(tmp_path):
    from tiltedsam.cli import _apply_config, build_parser

    path = tmp_path / "ok.toml"
    path.write_text('seeds = [0, 1]\nval-size = 20\nmethods = "erm"\nno-progress = true\n')
    parser = build_parser()
    args = parser.parse_args(["compare", "--config", str(path)])
    sub = parser.commands["compare"]
    args = _apply_config(sub, ["compare", "--config", str(path)], args)
    assert args.seeds == [0, 1] and args.val_size == 20.0 and args.methods == ["erm"]
    assert args.no_progress is True
