#!/bin/bash
# Issue #22, item 3: grid against --search tpe on MNIST-1D (TSAM's t x rho x lr, one seed,
# 10 epochs, one worker), then the table of docs/harness.md ("Search against the grid").
# Outputs go to $OUT (default /tmp/tiltedsam-search); run outputs are never committed.
set -euo pipefail
OUT=${OUT:-/tmp/tiltedsam-search}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
SPACE="tsam:tilt=0/5/20,rho=0.02/0.1,lr=0.03/0.1/0.3"
COMMON=(--seeds 0 --epochs 10 --val-size 500 --workers 1)
/usr/bin/time -v nice -n 5 $PY -m tiltedsam sweep --grid "$SPACE" "${COMMON[@]}" --out "$OUT/grid" > "$OUT.grid.log" 2>&1
/usr/bin/time -v nice -n 5 $PY -m tiltedsam sweep --search tpe --trials 18 --grid "$SPACE" "${COMMON[@]}" --out "$OUT/tpe" > "$OUT.tpe.log" 2>&1
grep -h "Elapsed\|User time" "$OUT.grid.log" "$OUT.tpe.log"
$PY benchmarks/search_vs_grid.py "$OUT/grid" "$OUT/tpe"
