#!/usr/bin/env bash
# Issue #20: run the evidence studies given as arguments (configs/evidence/*.toml), one after
# the other, single-threaded and at low priority; resumable (finished runs are read back,
# unfinished ones resume from their epoch checkpoint).  Each study writes runs/study/<stem>/.
#   nohup scripts/evidence.sh configs/evidence/mnist-mlp-noise*.toml > runs/evidence-a.log 2>&1 &
# WORKERS=2 runs each study in two processes that share its runs (docs/harness.md, "Studies").
# Then `make results` renders docs/results-evidence.md from what is stored (finished studies;
# `python scripts/build_evidence.py --partial` shows the running ones too, not for committing).
set -euo pipefail
cd "$(dirname "$0")/.."
TILTEDSAM=${TILTEDSAM:-.venv/bin/tiltedsam}
WORKERS=${WORKERS:-1}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for config in "$@"; do
  pids=()
  for _ in $(seq "$WORKERS"); do
    nice -n 19 "$TILTEDSAM" study "$config" --threads 1 &
    pids+=("$!")
  done
  rc=0  # wait for every worker, even after one failed, then stop on the failure
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  [ "$rc" -eq 0 ] || exit "$rc"
done
