"""docs/results-evidence.md from its template and the stored studies (issue #20).

``python scripts/build_evidence.py`` (part of ``make results``): every ``{{summary}}`` becomes
the table across regimes, ``{{flatness}}`` the flatness-against-accuracy table across them,
``{{cost}}`` what a training run of each method cost in each, and
every ``{{study:STEM}}`` the section of ``runs/study/STEM`` (the study of
``configs/evidence/STEM.toml``), its figures written to ``docs/img/``.  A study not run
yet renders as a line that says so; nothing in the page is typed by hand but the prose.

Runs are not committed: a study whose runs are not on this machine keeps its section and its
table rows from the committed page (``scripts/page_blocks.py``), rendered by the session that
ran it.  So a study still running is left out (as if absent) unless ``--partial`` is given: a
committed partial section would outlive the runs that could complete it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from page_blocks import committed_blocks, committed_rows, wrap  # noqa: E402

from tiltedsam.experiments.study_report import read_study, study_section  # noqa: E402
from tiltedsam.experiments.study_summary import (  # noqa: E402
    COST_HEADER,
    FLATNESS_HEADER,
    SUMMARY_HEADER,
    cost_row,
    flatness_row,
    summary_row,
)

TEMPLATE = ROOT / "scripts" / "results-evidence.md.template"
PAGE = ROOT / "docs" / "results-evidence.md"
IMG = ROOT / "docs" / "img"


def main(partial: bool = False) -> None:
    text = TEMPLATE.read_text()
    stems = re.findall(r"\{\{study:([\w.-]+)\}\}", text)
    views = {}
    for stem in stems:
        out = ROOT / "runs" / "study" / stem
        if (out / "study.json").exists():
            view = read_study(out)
            if view.finished or partial:
                views[stem] = view
            else:
                print(f"{stem}: still running, left out (--partial renders it)")

    kept = {s: b for s, b in committed_blocks(PAGE).items()
            if s in stems and s not in views and not b.startswith("*Not run yet")}  # fmt: skip

    def section(match: re.Match) -> str:
        stem = match.group(1)
        if stem in views:
            return wrap(stem, study_section(views[stem], IMG, f"evidence-{stem}"))
        if stem in kept:
            return wrap(stem, kept[stem])
        return (f"*Not run yet: `tiltedsam study configs/evidence/{stem}.toml` "
                f"(or `scripts/evidence.sh configs/evidence/{stem}.toml`).*\n")  # fmt: skip

    tables = {"summary": (SUMMARY_HEADER, summary_row), "flatness": (FLATNESS_HEADER, flatness_row),
              "cost": (COST_HEADER, cost_row)}  # fmt: skip
    for placeholder, (header, row) in tables.items():
        old = committed_rows(PAGE, header[0])
        rows = [row(views[s], f"#{s}") if s in views else old.get(s) for s in stems]
        table = "\n".join(header + [r for r in rows if r is not None]) + "\n"
        text = text.replace("{{" + placeholder + "}}", table)
    text = re.sub(r"\{\{study:([\w.-]+)\}\}", section, text)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)} ({len(views)} of {len(stems)} studies from runs/, "
          f"{len(kept)} kept from the committed page)")  # fmt: skip


if __name__ == "__main__":
    main(partial="--partial" in sys.argv[1:])
