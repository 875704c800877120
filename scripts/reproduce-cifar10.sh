#!/usr/bin/env bash
# Issue #11: both CIFAR-10 tables, one after the other, single-threaded (resumable: finished runs
# are skipped, an interrupted run resumes from its last epoch checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
TILTEDSAM=${TILTEDSAM:-.venv/bin/tiltedsam}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for table in cifar10-clean cifar10-noisy; do
  "$TILTEDSAM" sweep --config "configs/$table.toml"
done
