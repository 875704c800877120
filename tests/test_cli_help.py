"""Issue #19: ``--help`` shows every option's default (where output goes, analyze's subset and
draws, ...), the top-level help is plain text with examples that parse, and progress output in
a log (not a terminal) is one plain line per epoch."""

from __future__ import annotations

import io
import re
import shlex

import pytest
import torch
from tqdm import tqdm

from tiltedsam.cli import build_parser
from tiltedsam.cli_options import show_default
from tiltedsam.experiments import TrainConfig, parse_method, train_run
from tiltedsam.experiments.progress import LineProgress, progress_bar

from .reliability.conftest import tiny_data

PARSER = build_parser()


def words(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_top_level_help_is_plain_text_with_examples_that_parse():
    text = PARSER.format_help()
    assert "``" not in text and ":mod:" not in text and ":func:" not in text
    examples = [line.strip() for line in text.split("examples:")[1].splitlines() if line.strip()]
    assert len(examples) >= 5
    for line in examples:
        argv = shlex.split(line)
        assert argv[0] == "tiltedsam"
        PARSER.parse_args(argv[1:])  # exits (SystemExit) on a bad example


@pytest.mark.parametrize("command", sorted(PARSER.commands))
def test_every_option_says_what_it_does_and_its_default(command):
    sub = PARSER.commands[command]
    text = words(sub.format_help())
    for dest, action in sub.options.items():
        if not action.option_strings or dest in ("help", "version"):
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        if action.nargs == 0:  # a flag
            continue
        assert "(default" in action.help, f"{command} {action.option_strings[0]}: no default"
        if action.default is not None:
            assert f"(default: {show_default(action.default, action.nargs)})" in text


def test_defaults_a_user_asked_about_are_shown():
    compare = words(PARSER.commands["compare"].format_help())
    assert "(default: runs/compare)" in compare and "(default: erm sam tsam)" in compare
    analyze = words(PARSER.commands["analyze"].format_help())
    assert "(default: 1000)" in analyze and "(default: 100)" in analyze
    assert "writes analysis.md" in analyze.lower()
    assert "(default: 0,1,2)" in words(PARSER.commands["glue"].format_help())


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    assert isinstance(progress_bar(total=3, stream=Terminal()), tqdm)
    assert isinstance(progress_bar(total=3, stream=io.StringIO()), LineProgress)
    assert isinstance(progress_bar(total=3, stream=Terminal(), enabled=False), LineProgress)


def test_training_in_a_log_writes_one_plain_line_per_epoch(capsys):
    """Standard error captured (not a terminal): no carriage returns, no cursor escapes, one line
    per epoch instead of one per batch."""
    config = TrainConfig(model="mlp", epochs=3, batch_size=16, lr=0.05)
    torch.manual_seed(0)
    train_run(parse_method("sam"), tiny_data(), config, 0, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.strip().splitlines()
    steps = 3 * 4  # 64 training examples in batches of 16
    assert lines == [
        line for line in lines if re.fullmatch(r"sam seed 0: \d+/12 steps, epoch \d/3, loss "
                                               r"[\d.]+, test acc [\d.]+", line)
    ]  # fmt: skip
    assert [line.split(": ")[1].split(" steps")[0] for line in lines] == [
        f"{k * steps // 3}/{steps}" for k in (1, 2, 3)
    ]
