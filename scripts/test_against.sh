#!/usr/bin/env bash
# `make test-latest` / `make test-lowest`: the whole suite in a throwaway venv with the newest
# (latest) or the lowest direct (lowest) releases that pyproject.toml's ranges allow, resolved
# by uv and installed by pip (the CPU torch wheel is served to pip).  Prints one verdict line;
# the exit status is the suite's.  Not part of CI: releases appear without a commit.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:?latest or lowest}
torch_version=${2:?torch version}
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
resolution=highest
[ "$mode" = lowest ] && resolution=lowest-direct
$python -m venv "$work/venv"
pip="$work/venv/bin/pip"
$pip install -q uv || exit 1
echo "torch==$torch_version" > "$work/torch.txt"
"$work/venv/bin/uv" pip compile pyproject.toml --extra dev --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --resolution "$resolution" -c "$work/torch.txt" \
  --no-emit-package torch --no-header --no-annotate -q -o "$work/pins.txt" || exit 1
$python scripts/drop_cuda_pins.py "$work/pins.txt" "$work/pins.txt"
$pip install -q "torch==$torch_version" -c "$work/pins.txt" || exit 1
$pip install -q -c "$work/pins.txt" -e '.[dev]' || exit 1
versions=$("$work/venv/bin/python" - <<'PY'
from importlib.metadata import version
print(", ".join(f"{p} {version(p)}" for p in
      ("torch", "numpy", "scipy", "matplotlib", "transformers", "accelerate", "lightning")))
PY
)
log=${TMPDIR:-/tmp}/tiltedsam-test-$mode.log
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider > "$log" 2>&1
status=$?
grep -E "^(FAILED|ERROR) " "$log" | head -20
tail -1 "$log"
echo "(full log: $log)"
if [ $status -eq 0 ]; then verdict=PASSED; else verdict="FAILED (pytest exit $status)"; fi
echo "test-$mode: $verdict with $versions"
exit $status
