#!/usr/bin/env bash
# Issue #11: both CIFAR-10 tables in parallel, one single-threaded process each.  Each table
# runs its grid in two sweeps into the same directory: TSAM/ERM/SAM first (tuning + 3 seeds),
# then PGN/RSAM (rho tuned at TSAM's lr).  Resumable: finished runs are skipped, an interrupted
# run resumes from its last epoch checkpoint.  Then the reports and the flatness analysis of the
# selected ERM/SAM/TSAM runs.
set -euo pipefail
cd "$(dirname "$0")/.."
TILTEDSAM=${TILTEDSAM:-.venv/bin/tiltedsam}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p runs
table() {
  local config="configs/$1.toml"
  "$TILTEDSAM" sweep --config "$config" --grid \
    "tsam:lr=0.025,tilt=0/1/5/20/100" "erm:lr=0.01/0.025/0.05" "sam:lr=0.025/0.05,rho=0.05/0.1"
  "$TILTEDSAM" sweep --config "$config" --grid "pgn:lr=0.025,rho=0.05/0.1" "rsam:lr=0.025,rho=0.05/0.1"
  "$TILTEDSAM" report "runs/$1"
  "$TILTEDSAM" analyze "runs/$1" --selected --methods erm sam tsam --subset 1000 --draws 50 \
    --deltas 0.005,0.01,0.02
}
for name in cifar10-clean cifar10-noisy; do
  table "$name" > "runs/$name.log" 2>&1 &
done
wait
