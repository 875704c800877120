"""Keep a generated page's blocks whose runs are not on this machine.

The results pages are rendered from ``runs/``, which is never committed: a fresh checkout has
no runs, and re-rendering there would replace every finished study by "not run yet".  So each
generated block is written between two invisible comments,

    <!-- block:KEY -->
    ...
    <!-- /block:KEY -->

and a block whose source is missing is taken from the page as committed (rendered from the runs
of the session that ran them).  The builders print which blocks they kept.  Rows of a table
across studies are kept the same way, by the anchor ``](#stem)`` in their first cell.
"""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"<!-- block:(.+?) -->\n\n(.*?)\n<!-- /block:\1 -->\n", re.S)
_ANCHOR = re.compile(r"\]\(#([\w.-]+)\)")


def wrap(key: str, text: str) -> str:
    """``text`` between the markers of ``key`` (blank lines keep Markdown blocks apart)."""
    body = text if text.endswith("\n") else text + "\n"
    return f"<!-- block:{key} -->\n\n{body}\n<!-- /block:{key} -->\n"


def committed_blocks(page: Path) -> dict[str, str]:
    """Every marked block of ``page`` (if it exists), by key."""
    if not page.exists():
        return {}
    return {key: body for key, body in _BLOCK.findall(page.read_text())}


def committed_rows(page: Path, header: str) -> dict[str, str]:
    """The rows of the table whose header line is ``header`` in ``page``, by their anchor."""
    if not page.exists():
        return {}
    lines = page.read_text().splitlines()
    if header not in lines:
        return {}
    rows = {}
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        match = _ANCHOR.search(line)
        if match:
            rows[match.group(1)] = line
    return rows
