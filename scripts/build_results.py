"""Write docs/results.md from its template and the stored runs (nothing hand-typed).

Placeholders in ``scripts/results.md.template``, each on a line of its own:

* ``{{report DIR}}``: the tables of ``DIR/report.md`` (written by ``tiltedsam report DIR``);
* ``{{analysis DIR}}``: ``DIR/analysis.md`` (written by ``tiltedsam analyze DIR``);
* ``{{image SRC NAME}}``: copies the PNG ``SRC`` to ``docs/img/NAME`` and links it;
* ``{{config FILE}}``: the config file in a code block.

A placeholder whose source is missing becomes a line saying so (the run has not finished).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERN = re.compile(r"^\{\{(report|analysis|image|config) ([^ }]+)(?: ([^ }]+))?\}\}$")


def render(line: str) -> str:
    match = PATTERN.match(line.strip())
    if not match:
        return line
    kind, source, name = match.groups()
    path = ROOT / source
    target = {"report": path / "report.md", "analysis": path / "analysis.md"}.get(kind, path)
    if not target.exists():
        return f"*(not available: `{target.relative_to(ROOT)}` does not exist yet)*\n"
    if kind == "report":
        text = target.read_text()
        return re.sub(r"^# Sweep report\n+", "", text)
    if kind == "analysis":
        return target.read_text()
    if kind == "config":
        return f"```toml\n{target.read_text().rstrip()}\n```\n"
    destination = ROOT / "docs" / "img" / name
    shutil.copyfile(target, destination)
    return f"![{name}](img/{name})\n"


def main() -> int:
    template = ROOT / "scripts" / "results.md.template"
    out = ROOT / "docs" / "results.md"
    lines = template.read_text().splitlines(keepends=True)
    out.write_text("".join(render(line) for line in lines))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
