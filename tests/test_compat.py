"""The private names of other libraries that tiltedsam uses live in ``tiltedsam.compat``; these
tests fail with the library version that broke one (see docs/about.md, "Compatibility")."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tiltedsam.compat import torch as torch_compat

SRC = Path(__file__).resolve().parents[1] / "src" / "tiltedsam"


def test_torch_internals_still_work():
    problems = torch_compat.self_check()
    assert not problems, (
        f"torch {torch.__version__} broke internals tiltedsam.compat.torch relies on "
        f"(checked with {torch_compat.CHECKED_WITH}): " + "; ".join(problems)
    )


def test_self_check_reports_a_broken_internal(monkeypatch):
    """The check is real: hide one internal and it is reported by name."""
    monkeypatch.setattr(torch_compat, "grad_scaler_scale", lambda scaler: None)
    problems = torch_compat.self_check()
    assert len(problems) == 1 and problems[0].startswith("GradScaler internals")


# Private names of other libraries: ``obj._x`` on torch/transformers/lightning/accelerate/
# argparse objects, or imports from their private modules.  ``torch._foreach_*`` kernels are
# public enough (documented in torch.optim); tiltedsam's own ``self._x`` are ours.
PRIVATE_MODULE = re.compile(
    r"\b(?:torch|transformers|lightning|accelerate|nn)(?:\.\w+)*\._[a-zA-Z]\w*"
)
PRIVATE_ATTRIBUTE = re.compile(
    r"\b(?:scaler|parser|trainer|storage|encoder|argparse)\._[a-zA-Z]\w*"
)
# ``from torch.nn.modules.batchnorm import _NormBase`` (one name of the import list is enough)
PRIVATE_IMPORT = re.compile(
    r"^\s*from\s+(?:torch|transformers|lightning|accelerate)[\w.]*\s+import\s+.*\b(_[a-zA-Z]\w*)"
)


def test_the_patterns_catch_each_way_of_reaching_a_private_name():
    assert PRIVATE_MODULE.findall("isinstance(m, nn.modules.batchnorm._NormBase)")
    assert PRIVATE_ATTRIBUTE.findall("scale = scaler._scale")
    assert PRIVATE_IMPORT.findall("from torch.nn.modules.batchnorm import BatchNorm1d, _NormBase")
    assert not PRIVATE_IMPORT.findall("from torch.nn import functional as F")


def test_no_private_third_party_names_outside_compat():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if "compat" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            found = PRIVATE_MODULE.findall(code) + PRIVATE_ATTRIBUTE.findall(code)
            for match in found + PRIVATE_IMPORT.findall(code):
                if "._foreach_" in match:
                    continue
                offenders.append(f"{path.relative_to(SRC)}:{number}: {match}")
    assert not offenders, "third-party private names outside tiltedsam/compat: " + ", ".join(
        offenders
    )
