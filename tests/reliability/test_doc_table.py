"""docs/reliability.md names a test for each fault: every one it names exists."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "reliability.md"


def test_every_test_named_in_the_table_exists():
    named = []
    for row in DOC.read_text().splitlines():
        file = None
        for match in re.finditer(r"`(test_\w+\.py)?::(test_\w+)`", row):
            file = match.group(1) or file
            assert file is not None, f"a `::name` with no file before it: {row}"
            named.append((file, match.group(2)))
    assert len(named) >= 40
    for file, name in named:
        source = (HERE / file).read_text()
        assert re.search(rf"^def {name}\(", source, flags=re.M), f"{file}::{name} is not a test"
