"""The command line's options: flags generated from the config dataclasses, value parsers and
config files.

:func:`add_config_options` adds one flag per field of a config dataclass
(:mod:`tiltedsam.experiments.configs`): ``--field-name`` (or the field's own flag), its type from
the annotation, its default and help from the field, so each default is written once, in the
dataclass.  :func:`config_from_args` builds the dataclass back from the parsed arguments.  A
``--config FILE`` (TOML or YAML) gives defaults to a command's flags (:func:`apply_config`); flags
on the command line win, and every value is checked as its flag would be.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from tiltedsam.experiments.configs import load_config_file

HELP_WIDTH = 92


def wrap_paragraphs(text: str, width: int = HELP_WIDTH) -> str:
    """Each paragraph (blank-line separated) filled to ``width``; indented lines (examples)
    kept as written."""
    out = []
    for paragraph in text.strip("\n").split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith("  ") for line in lines):
            out.append(paragraph)
        else:
            out.append(textwrap.fill(" ".join(line.strip() for line in lines), width))
    return "\n\n".join(out)


def show_default(value: Any, nargs: Any = None) -> str:
    """A default as one would type it: ``0,1,2`` for comma-separated values, ``erm sam`` for
    ``nargs='+'``."""
    if isinstance(value, list | tuple):
        sep = " " if nargs in ("+", "*") else ","
        return sep.join(show_default(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that keeps what it is given through public calls: ``options``
    maps each dest to the Action ``add_argument`` returned, ``commands`` each subcommand name to
    its parser.  (Config files are checked against ``options``; argparse's own lists of them are
    private.)

    Help: descriptions and epilogs are printed as written (paragraphs filled to the width,
    indented example lines kept), and every option's default is written into its help, as one
    would type it (``(default: 0,1,2)``); options without a default (None) or flags say nothing.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.options: dict[str, argparse.Action] = {}  # before __init__ adds --help
        self.commands: dict[str, Parser] = {}
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        for key in ("description", "epilog"):
            if kwargs.get(key):
                kwargs[key] = wrap_paragraphs(kwargs[key])
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        default = kwargs.get("default")
        is_flag = kwargs.get("action") in ("store_true", "store_false", "version", "help")
        if args and args[0].startswith("-") and default is not None and not is_flag:
            shown = show_default(default, kwargs.get("nargs")).replace("%", "%%")
            help_text = kwargs.get("help") or ""
            if "(default" not in help_text:
                kwargs["help"] = f"{help_text} (default: {shown})".lstrip()
        action = super().add_argument(*args, **kwargs)
        self.options[action.dest] = action
        return action

    def add_command(self, subparsers, name: str, **kwargs) -> Parser:
        """``subparsers.add_parser(name, ...)``, remembered in ``commands``."""
        command = subparsers.add_parser(name, **kwargs)
        self.commands[name] = command
        return command


# ------------------------------------------------------------------------------ value parsers
def seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``."""
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated ints, got {text!r}"
        ) from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"--seeds must list at least one int >= 0, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"the seeds must be distinct, got {text!r} (one run would count as two seeds)"
        )
    return values


def _bounded(kind: type, wanted: str, ok: Callable[[float], bool]) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` where ``ok`` holds, else an error saying ``wanted``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    return parse


positive_int = _bounded(int, "an int >= 1", lambda v: v >= 1)  # --steps, --draws
nonnegative_float = _bounded(float, "a finite number >= 0", lambda v: 0 <= v < float("inf"))


def names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def floats(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


# ------------------------------------------------------------------- flags from dataclasses
def _scalar(annotation: Any) -> Any:
    """``int | None`` → ``int``; ``int | float`` → ``float``; a plain type as it is."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return float if float in kinds else kinds[0]
    return annotation


def add_config_options(
    parser: Parser, cls: type, defaults: Mapping[str, Any] | None = None
) -> None:
    """One flag per field of the config dataclass ``cls`` (fields with ``cli=False`` left out);
    ``defaults`` replaces a field's default for this command (``--val-size`` of ``sweep``).  A
    bool field that defaults to True becomes ``--no-<name>``."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default = (defaults or {}).get(f.name, f.default)
        kind = _scalar(hints[f.name])
        help_text = meta.get("help") or None
        if kind is bool:
            negated = default is True
            flag = meta.get("flag") or f"--{'no-' if negated else ''}{f.name.replace('_', '-')}"
            parser.add_argument(flag, action="store_true", help=help_text,
                                dest=f"no_{f.name}" if negated else f.name)  # fmt: skip
            continue
        choices = meta.get("choices")
        choices = list(choices()) if callable(choices) else choices
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f.name, type=meta.get("parse") or kind, default=default,
                            choices=list(choices) if choices else None, help=help_text)  # fmt: skip


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The config dataclass ``cls`` from the flags :func:`add_config_options` added."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in overrides or not f.metadata.get("cli", True):
            continue
        if _scalar(hints[f.name]) is bool and f.default is True:  # --no-<name>
            values[f.name] = not getattr(args, f"no_{f.name}")
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
        elif f.default is MISSING:  # pragma: no cover - every config field has a default
            raise TypeError(f"{cls.__name__}.{f.name} has no flag and no default")
    return cls(**values, **overrides)


# ---------------------------------------------------------------------------- config files
def apply_config(sub: Parser, argv: Sequence[str] | None, args: argparse.Namespace):
    """Re-parse with the config file's values as defaults (command-line flags still win)."""
    values = load_config_file(args.config)
    known = set(sub.options) - {"help", "config"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{args.config}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    actions = sub.options
    for key, value in values.items():
        values[key] = config_value(args.config, actions[key], value)
    sub.set_defaults(**values)
    return sub.parse_args(list(argv)[1:] if argv is not None else sys.argv[2:])


def config_value(path: str, action: argparse.Action, value: object) -> object:
    """A config-file value checked (and converted) as its flag would be; errors name the file."""
    flag = action.option_strings[-1] if action.option_strings else action.dest
    where = f"{path}: key {action.dest!r} ({flag})"
    if action.nargs == 0 and action.const is True:  # a store_true flag
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if action.nargs == "+":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise ValueError(f"{where} must be a string or a list of strings, got {value!r}")
        return items
    if value is None:
        return None
    if isinstance(value, list) and action.type in (seeds, floats):
        value = ",".join(str(v) for v in value)
    if action.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if action.type is int and isinstance(value, float):
            raise ValueError(f"{where} must be an int, got {value!r}")
    if action.type is not None:
        try:
            value = action.type(value if isinstance(value, str) else str(value))
        except (ValueError, argparse.ArgumentTypeError) as err:
            kind = {int: "an int", float: "a number"}.get(action.type)
            message = f"{where} must be {kind}, got {value!r}" if kind else f"{where}: {err}"
            raise ValueError(message) from None
    elif not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} must be one of {list(action.choices)}, got {value!r}")
    return value


__all__ = [
    "Parser",
    "add_config_options",
    "apply_config",
    "config_from_args",
    "config_value",
    "floats",
    "ints",
    "names",
    "seeds",
]
