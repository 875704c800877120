"""Issue #17, class 2 for ``tiltedsam glue``: two commands with other settings into one output
directory keep each other's runs and each reports its own; the directory's report refuses to
mix them.  Skipped without the ``text`` extra (transformers)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers", reason="the 'text' extra (transformers) is not installed")

from tiltedsam.cli import main

from ..test_glue_train import tiny_encoder, write_task  # noqa: F401 (a fixture)


def test_two_glue_commands_with_other_epochs_keep_each_others_results(tmp_path, request, capsys):
    """Each command reports its own runs; ``tiltedsam report`` of the directory refuses."""
    encoder = request.getfixturevalue("tiny_encoder")
    write_task(tmp_path / "data", "RTE", n_train=40, n_dev=8)
    args = ["glue", "--task", "RTE", "--data-path", str(tmp_path / "data"), "--encoder",
            str(encoder), "--batch-size", "8", "--no-progress", "--grid", "erm", "sam",
            "--seeds", "0", "--out", str(tmp_path / "out")]  # fmt: skip
    for epochs in ("1", "2"):
        assert main([*args, "--epochs", epochs]) == 0, capsys.readouterr().err
        assert "| erm | 1 |" in (tmp_path / "out" / "report.md").read_text()
    runs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("runs/*/*/summary.json")]
    assert sorted(len(r["result"]["history"]) for r in runs) == [1, 1, 2, 2]
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out")]) == 2  # the directory mixes them: refused
    assert "differ in train" in capsys.readouterr().err
