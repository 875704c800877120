#!/bin/bash
# Issue #22: the same 4-configuration x 2-seed tiny grid with --executor local, --executor ray
# (a local cluster started by the sweep) and on a running cluster of two raylets on this
# machine (loopback only, token auth), wall time of each command; docs/harness.md ("Executors,
# measured") and docs/howto/ray.md.  Needs tiltedsam[ray].  Ends with `ray stop`.
set -uo pipefail
OUT=${OUT:-/tmp/tiltedsam-executors}
PY=${PY:-.venv/bin/python}
RAY=${RAY:-.venv/bin/ray}
export OMP_NUM_THREADS=1
GRID=(--grid sam:rho=0.02/0.05/0.1/0.2 --seeds 0,1 --model mlp --epochs 3 --val-size 500 --workers 2)
timed() {  # label, then the sweep's extra arguments; a fresh output directory each time
  rm -rf "$OUT/$1"
  local start=$(date +%s.%N)
  nice -n 5 $PY -m tiltedsam sweep "${GRID[@]}" --out "$OUT/$1" "${@:2}" > "$OUT.$1.log" 2>&1
  echo "$1: rc=$? $(echo "$(date +%s.%N) - $start" | bc) s"
}
for i in 1 2; do
  timed local --executor local
  timed ray-cold --executor ray
done
export RAY_AUTH_MODE=token  # Ray 2.60: token auth is on; joining needs this (and the token)
$RAY start --head --node-ip-address 127.0.0.1 --port 6390 --num-cpus 1 --include-dashboard=false > /dev/null
$RAY start --address 127.0.0.1:6390 --node-ip-address 127.0.0.1 --num-cpus 1 > /dev/null
sleep 4
$RAY status --address 127.0.0.1:6390 | head -20
for i in 1 2; do
  timed ray-two-raylets --executor ray --ray-address 127.0.0.1:6390
done
ps -eo rss,cmd | grep -v grep | grep -E "ray|gcs_server|raylet" \
  | awk '{s+=$1; n+=1} END {print n " Ray processes, " s/1024 " MiB resident (idle cluster)"}'
$RAY stop > /dev/null
