"""The results pages keep what was rendered from runs that a fresh checkout no longer has."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tiltedsam.experiments.study_summary import COST_HEADER, FLATNESS_HEADER, SUMMARY_HEADER

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


blocks = _script("page_blocks")

BODY = "Intro.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![x](img/x.png)\n"


def test_blocks_round_trip_through_a_page_with_blank_lines_and_tables(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n" + blocks.wrap("one", BODY) + "\nprose\n\n" + blocks.wrap("two", "x")
    )
    assert blocks.committed_blocks(page) == {"one": BODY, "two": "x\n"}
    assert blocks.committed_blocks(tmp_path / "missing.md") == {}


def test_rows_are_taken_from_the_named_table_only_by_their_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "| regime | acc |\n|---|---|\n| [A](#a-0) | 1 |\n| [B](#b-0) | 2 |\n\n"
        "| regime | cost |\n|---|---|\n| [A](#a-0) | 9 |\n"
    )
    assert blocks.committed_rows(page, "| regime | cost |") == {"a-0": "| [A](#a-0) | 9 |"}
    assert blocks.committed_rows(page, "| regime | acc |")["b-0"] == "| [B](#b-0) | 2 |"
    assert blocks.committed_rows(page, "| absent |") == {}


def test_build_results_prefers_the_runs_then_the_committed_block(tmp_path, monkeypatch):
    build = _script("build_results")
    monkeypatch.setattr(build, "ROOT", tmp_path)
    line = "{{report runs/x}}\n"
    kept, reused = {"report runs/x": "old table\n"}, []
    assert build.render(line, kept, reused) == blocks.wrap("report runs/x", "old table\n")
    assert reused == ["report runs/x"]
    assert "not available" in build.render(line, {}, [])
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "report.md").write_text("# Sweep report\n\nnew table\n")
    reused = []
    assert build.render(line, kept, reused) == blocks.wrap("report runs/x", "new table\n")
    assert reused == []


def test_the_committed_evidence_page_has_a_section_for_every_row():
    page = ROOT / "docs" / "results-evidence.md"
    template = (ROOT / "scripts" / "results-evidence.md.template").read_text()
    stems = set(re.findall(r"\{\{study:([\w.-]+)\}\}", template))
    sections = blocks.committed_blocks(page)
    assert sections and set(sections) <= stems
    for header in (SUMMARY_HEADER, FLATNESS_HEADER, COST_HEADER):
        rows = blocks.committed_rows(page, header[0])
        assert rows and set(rows) <= set(sections)
