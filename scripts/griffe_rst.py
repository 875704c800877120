"""Griffe extension for the docs site: the reST bits of tiltedsam's docstrings as Markdown.

The package's docstrings are written for ``help()`` and for reading in the source: Google-style
sections (``Args:``) with a few reStructuredText constructs for math and cross-references.
mkdocstrings renders docstrings as Markdown, so before parsing this extension rewrites

* ``:math:`x``` to ``\\(x\\)`` (inline math, rendered by KaTeX through ``pymdownx.arithmatex``);
* ``.. math:: x`` and ``.. math::`` followed by an indented block to a ``$$ ... $$`` block;
* ``:class:`~a.b.C```, ``:func:``, ``:mod:``, ``:meth:``, ``:attr:`` to inline code (``C`` with
  ``~``, the full path without);
* a paragraph ending in ``::`` followed by an indented block to a fenced Python block.

Loaded by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``); the
package itself is not touched.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _indented_block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """Lines from ``start`` indented deeper than ``indent`` (blank lines inside kept)."""
    block: list[str] = []
    i = start
    while i < len(lines):
        line = lines[i]
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
        i += 1
    while block and not block[-1].strip():
        block.pop()
        i -= 1
    return block, i


def rst_to_markdown(text: str) -> str:
    """Rewrite the reST constructs listed in the module docstring; everything else is kept."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            indent, inline = len(directive.group(1)), directive.group(2).strip()
            block, i = _indented_block(lines, i + 1, indent)
            body = [inline] if inline else []
            body += textwrap.dedent("\n".join(block)).strip("\n").splitlines()
            pad = " " * indent
            out += ["", f"{pad}$$", *(pad + b for b in body), f"{pad}$$", ""]
            continue
        stripped = line.rstrip()
        if stripped.endswith("::") and not stripped.lstrip().startswith(".."):
            indent = len(line) - len(line.lstrip())
            block, end = _indented_block(lines, i + 1, indent)
            if any(b.strip() for b in block):
                pad = " " * indent
                text_part = stripped[:-1] if stripped[:-2].strip() else ""
                code = textwrap.dedent("\n".join(block)).strip("\n").splitlines()
                if text_part:
                    out.append(text_part)
                out += ["", f"{pad}```python", *(pad + c for c in code), f"{pad}```", ""]
                i = end
                continue
        out.append(line)
        i += 1
    result = "\n".join(out)
    result = _MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", result)
    return _ROLE.sub(_role, result)


class RstToMarkdown(griffe.Extension):
    """Rewrite each docstring once, as the object is created (before any section parsing)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        del kwargs
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
