"""``pip wheel .`` builds a wheel with type information, the version and the extras; the
module and console entry points answer --help / --version."""

import subprocess
import sys
import zipfile
from pathlib import Path

import tiltedsam

ROOT = Path(__file__).parents[1]


def test_wheel_has_py_typed_version_and_extras(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("tiltedsam-*.whl")
    assert wheel.name.startswith(f"tiltedsam-{tiltedsam.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "tiltedsam/py.typed" in names
        assert "tiltedsam/integrations/huggingface.py" in names
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    text = metadata.decode()
    assert f"Version: {tiltedsam.__version__}" in text
    for extra in ("text", "lightning", "dev"):
        assert f"Provides-Extra: {extra}" in text


def test_module_and_version_entry_points():
    help_text = subprocess.run([sys.executable, "-m", "tiltedsam", "--help"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "compare" in help_text and "sweep" in help_text
    version = subprocess.run([sys.executable, "-m", "tiltedsam", "--version"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert version.strip() == f"tiltedsam {tiltedsam.__version__}"
