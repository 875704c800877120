"""Write docs/results.md from its template and the stored runs (nothing hand-typed).

Placeholders in ``scripts/results.md.template``, each on a line of its own:

* ``{{report DIR}}``: the tables of ``DIR/report.md`` (written by ``tiltedsam report DIR``);
* ``{{analysis DIR}}``: ``DIR/analysis.md`` (written by ``tiltedsam analyze DIR``);
* ``{{image SRC NAME}}``: copies the PNG ``SRC`` to ``docs/img/NAME`` and links it;
* ``{{config FILE}}``: the config file in a code block.

Each rendered placeholder is a marked block (``scripts/page_blocks.py``).  A placeholder whose
source is missing keeps its block from the committed page (runs are not committed, so a fresh
checkout has none); one never rendered becomes a line saying so (the run has not finished).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from page_blocks import committed_blocks, wrap  # noqa: E402

PATTERN = re.compile(r"^\{\{(report|analysis|image|config) ([^ }]+)(?: ([^ }]+))?\}\}$")


def render(line: str, kept: dict[str, str], reused: list[str]) -> str:
    """``line``, or the marked block its placeholder renders to: from ``kept`` (the committed
    page's blocks, by key; the key appended to ``reused``) when the placeholder's source is
    missing."""
    match = PATTERN.match(line.strip())
    if not match:
        return line
    key = line.strip()[2:-2]
    kind, source, name = match.groups()
    path = ROOT / source
    target = {"report": path / "report.md", "analysis": path / "analysis.md"}.get(kind, path)
    if not target.exists():
        if key in kept:
            reused.append(key)
            return wrap(key, kept[key])
        return f"*(not available: `{target.relative_to(ROOT)}` does not exist yet)*\n"
    if kind == "report":
        return wrap(key, re.sub(r"^# Sweep report\n+", "", target.read_text()))
    if kind == "analysis":
        return wrap(key, target.read_text())
    if kind == "config":
        return wrap(key, f"```toml\n{target.read_text().rstrip()}\n```\n")
    shutil.copyfile(target, ROOT / "docs" / "img" / name)
    return wrap(key, f"![{name}](img/{name})\n")


def main() -> int:
    template = ROOT / "scripts" / "results.md.template"
    out = ROOT / "docs" / "results.md"
    lines = template.read_text().splitlines(keepends=True)
    kept, reused = committed_blocks(out), []
    out.write_text("".join(render(line, kept, reused) for line in lines))
    note = f"; {len(reused)} blocks kept from the committed page (runs not here)" if reused else ""
    print(f"wrote {out.relative_to(ROOT)}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
