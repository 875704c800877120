#!/usr/bin/env bash
# Issue #11: both CIFAR-10 tables in parallel, one single-threaded process each (resumable:
# finished runs are skipped, an interrupted run resumes from its last epoch checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
TILTEDSAM=${TILTEDSAM:-.venv/bin/tiltedsam}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p runs
for table in cifar10-clean cifar10-noisy; do
  "$TILTEDSAM" sweep --config "configs/$table.toml" > "runs/$table.log" 2>&1 &
done
wait
for table in cifar10-clean cifar10-noisy; do
  "$TILTEDSAM" report "runs/$table"
done
