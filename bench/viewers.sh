#!/usr/bin/env bash
# Viewers never slow the work: a 300-task fan-out on `weir standalone` (SQLite), run once
# with nobody watching and once with 200 live pages of the DAG's grid open (50 each for four
# users, opened before the run starts), side by side; for each, the run's trigger-to-end time
# and the API's latency (p50, p95) measured while it runs. Figures: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weir
weir=$PWD/target/release/weir
rounds=${ROUNDS:-3}
viewers=${VIEWERS:-200}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/dags"
{
  echo "id: fan"
  echo "tasks:"
  for i in $(seq -w 1 300); do echo "  t$i: {kind: shell, run: 'true'}"; done
} > "$tmp/dags/fan.yaml"
cd "$tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$weir" db migrate >/dev/null
tokens=()
for u in 1 2 3 4; do
  "$weir" users create "viewer$u" --role viewer >/dev/null
  tokens+=("$("$weir" users token "viewer$u" 2>/dev/null)")
done
"$weir" users create bench --role operator >/dev/null
op=$("$weir" users token bench 2>/dev/null)
WEIR_WEB_BIND=127.0.0.1:$port "$weir" standalone >/dev/null 2>&1 &
pids+=($!)
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
base="http://127.0.0.1:$port"

# API latency while the run goes: GET /api/v1/dags in a loop; prints "p50 p95" in ms.
probe() {
  local out=$1
  : > "$out"
  while [ -e "$tmp/probing" ]; do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $op" "$base/api/v1/dags" >> "$out"
  done
}
percentiles() {
  sort -n "$1" | awk '{a[NR]=$1} END {if (NR==0) {print "- -"; exit} p50=a[int(NR*0.5)+1]; p95=a[int(NR*0.95)+1]; printf "%.1f %.1f\n", p50*1000, p95*1000}'
}

one_round() {
  local label=$1 streams=$2 day=$3
  local run
  local watchers=()
  if [ "$streams" -gt 0 ]; then
    for n in $(seq "$streams"); do
      t=${tokens[$(( n % 4 ))]}
      curl -sN -H "Authorization: Bearer $t" "$base/live/dags/fan/grid" >/dev/null 2>&1 &
      watchers+=($!)
    done
    sleep 3
  fi
  run=$(curl -sf -X POST -H "Authorization: Bearer $op" -H 'content-type: application/json' \
    -d "{\"logical_date\": \"$day\"}" "$base/api/v1/dags/fan/runs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  local started=$(date +%s.%N)
  touch "$tmp/probing"
  probe "$tmp/lat" &
  local prober=$!
  while true; do
    state=$(curl -s -H "Authorization: Bearer $op" "$base/api/v1/runs/$run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    case $state in success|failed) break ;; esac
    sleep 0.1
  done
  local ended=$(date +%s.%N)
  rm -f "$tmp/probing"
  wait "$prober" 2>/dev/null || true
  for w in "${watchers[@]}"; do kill "$w" 2>/dev/null || true; done
  read -r p50 p95 < <(percentiles "$tmp/lat")
  printf '%-22s run %5.2f s   API p50 %6s ms  p95 %6s ms   (%s)\n' "$label" "$(echo "$ended - $started" | bc)" "$p50" "$p95" "$state"
}

for i in $(seq "$rounds"); do
  one_round "no viewers" 0 "2024-01-0${i}"
  one_round "$viewers live pages" "$viewers" "2024-02-0${i}"
done
