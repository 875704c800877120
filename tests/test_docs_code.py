"""Every code block in README.md and docs/ runs as written.

* ```` ```python ```` blocks (also ```` ```py ````, with or without attributes such as
  ``title="..."``) are executed on CPU: the blocks of one page in order, in one namespace, with
  a temporary directory as the working directory and ``torch.manual_seed(0)`` before the first.
  A block whose first line is ``# docs: skip: <reason>`` is not executed; the reason is required.
  Use it only for code that cannot run here (e.g. needs a GPU or several processes).
* ```` ```bash ```` / ```` ```sh ```` / ```` ```console ```` blocks are not executed, but every
  ``tiltedsam SUBCOMMAND --flag`` they show must name a real subcommand and real flags, and every
  ``make TARGET`` a target of the Makefile.
* ```` ```toml ```` and ```` ```yaml ```` blocks must parse.

Fences may be indented (inside admonitions or lists); the block is dedented by the fence's
indentation.  See docs/about.md.
"""

from __future__ import annotations

import re
import shlex
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"^#\s*docs:\s*skip\b:?\s*(.*)$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str


def pages() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "assets" not in p.parts)
    return [ROOT / "README.md", *docs]


def extract(path: Path) -> list[Block]:
    """Fenced blocks of a Markdown file, with their language (first word of the info string)."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        lang = info.split()[0].lstrip("{.").rstrip("}").lower() if info else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            line = lines[j]
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        rel = path.relative_to(ROOT).as_posix()
        blocks.append(Block(rel, i + 1, lang, textwrap.dedent("\n".join(body)) + "\n"))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for p in pages() for b in extract(p)]
PYTHON_PAGES = sorted({b.page for b in ALL_BLOCKS if b.lang in ("python", "py")})


def skip_reason(block: Block) -> str | None:
    first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
    match = SKIP.match(first)
    if match is None:
        return None
    return match.group(1).strip()


@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_blocks_run(page: str, tmp_path, monkeypatch) -> None:
    blocks = [b for b in ALL_BLOCKS if b.page == page and b.lang in ("python", "py")]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TILTEDSAM_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    # The examples are tiny: one thread is faster, and immune to cores shared with other jobs.
    torch.set_num_threads(1)
    namespace: dict = {"__name__": f"docs:{page}"}
    executed = 0
    from tiltedsam.optim import METHODS

    methods = dict(METHODS)  # a page may register a method: the table is restored after it
    try:
        for block in blocks:
            reason = skip_reason(block)
            if reason is not None:
                assert reason, f"{page}:{block.line}: '# docs: skip' needs a reason after it"
                continue
            code = compile(block.code, f"{page}:{block.line}", "exec")
            try:
                exec(code, namespace)
            except Exception as err:
                raise AssertionError(
                    f"{page}: the block at line {block.line} failed: {err!r}"
                ) from err
            executed += 1
    finally:
        torch.set_num_threads(threads)
        METHODS.clear()
        METHODS.update(methods)
    if page == "README.md":
        assert isinstance(namespace["opt"].last_step.weights, torch.Tensor)
    assert executed or all(skip_reason(b) for b in blocks)


def test_every_page_with_code_is_collected() -> None:
    """The collector sees the README and the docs (``pytest -s`` prints the counts)."""
    python = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]
    skipped = [b for b in python if skip_reason(b) is not None]
    print(
        f"\n{len(python)} python blocks in {len(PYTHON_PAGES)} pages ({len(skipped)} skipped), "
        f"{len(SHELL_BLOCKS)} shell blocks, {len(CONFIG_BLOCKS)} config blocks"
    )
    assert "README.md" in PYTHON_PAGES
    assert len(python) >= 20


# ------------------------------------------------------------------ shell blocks
def _subparsers():
    from tiltedsam.cli import build_parser

    parser = build_parser()
    return parser, parser.commands


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", text, flags=re.M))


def _commands(code: str) -> list[list[str]]:
    """Shell commands of a block: continuation lines joined, comments and prompts dropped,
    split at ``&&``, ``||``, ``;`` and ``|``."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        current: list[str] = []
        for token in tokens:
            if token in ("&&", "||", ";", "|"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[f"{b.page}:{b.line}" for b in SHELL_BLOCKS])
def test_shell_blocks_name_real_commands(block: Block) -> None:
    parser, subcommands = _subparsers()
    targets = _make_targets()
    for cmd in _commands(block.code):
        where = f"{block.page}:{block.line}: {' '.join(cmd)}"
        if cmd[:3] == ["python", "-m", "tiltedsam"]:
            cmd = ["tiltedsam", *cmd[3:]]
        if cmd[0] == "make":
            for target in cmd[1:]:
                if "=" not in target and not target.startswith("-"):
                    assert target in targets, f"{where}: no Makefile target {target!r}"
        if cmd[0] != "tiltedsam":
            continue
        args = cmd[1:]
        if not args or args[0].startswith("-"):
            flags = {s for a in parser.options.values() for s in a.option_strings}
            assert all(a.split("=")[0] in flags for a in args if a.startswith("-")), where
            continue
        assert args[0] in subcommands, f"{where}: no subcommand {args[0]!r}"
        sub = subcommands[args[0]]
        flags = {s for a in sub.options.values() for s in a.option_strings}
        for arg in args[1:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in flags, f"{where}: {args[0]} has no flag {arg!r}"


CONFIG_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("toml", "yaml", "yml")]


@pytest.mark.parametrize("block", CONFIG_BLOCKS, ids=[f"{b.page}:{b.line}" for b in CONFIG_BLOCKS])
def test_config_blocks_parse(block: Block) -> None:
    """Config blocks parse; one that names ``tiltedsam SUB --config`` in a comment uses only
    options of SUB (as ``--config`` itself would check)."""
    where = f"{block.page}:{block.line}"
    values = tomllib.loads(block.code) if block.lang == "toml" else yaml.safe_load(block.code)
    assert isinstance(values, dict), where
    match = re.search(r"tiltedsam (\w+) --config", block.code)
    if match:
        _, subcommands = _subparsers()
        dests = set(subcommands[match.group(1)].options)
        unknown = {k.replace("-", "_") for k in values} - dests
        assert not unknown, f"{where}: {match.group(1)} has no option(s) {sorted(unknown)}"
