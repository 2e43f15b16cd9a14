#!/usr/bin/env bash
# A run triggered from the CLI into a running `weir standalone` (SQLite, the defaults): 10
# triggers of a one-task DAG, each `weir trigger --wait --json`, and from the run's record
# the time from its creation to its task's start (what the trigger waited for the scheduler)
# and to its end. bench/compare.sh runs it for two builds side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir; fi
bin=$(realpath "${BIN:-target/release}")
rounds=${ROUNDS:-1}
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dags"
printf 'id: poke\ntasks:\n  t:\n    kind: shell\n    run: "true"\n' >"$tmp/dags/poke.yaml"
printf 'database_url = "sqlite://.weir/weir.db"\ndags_folder = "dags"\n[web]\nbind = "127.0.0.1:0"\n' >"$tmp/weir.toml"
(cd "$tmp" && exec "$bin/weir" standalone >"$tmp/out.log" 2>&1) &
pid=$!
for _ in $(seq 100); do grep -q "web UI at" "$tmp/out.log" 2>/dev/null && break; sleep 0.1; done
for r in $(seq "$rounds"); do
  for i in $(seq 10); do
    (cd "$tmp" && "$bin/weir" trigger poke --wait --json) >"$tmp/run-$r-$i.json"
  done
done
python3 - "$tmp" <<'PY'
import glob, json, statistics, sys
from datetime import datetime
def t(s): return datetime.fromisoformat(s.replace("Z", "+00:00"))
start, end = [], []
for f in sorted(glob.glob(sys.argv[1] + "/run-*.json")):
    run = json.load(open(f))
    task = run["tasks"][0]
    assert run["state"] == "success", run
    # A manual run's id carries its creation time to the microsecond.
    created = t(run["run_id"].split("__", 1)[1])
    start.append((t(task["started_at"]) - created).total_seconds() * 1000)
    end.append((t(task["ended_at"]) - created).total_seconds() * 1000)
print(f"CLI trigger into standalone [sqlite], {len(start)} runs: created → task started median "
      f"{statistics.median(start):.1f} ms (max {max(start):.1f}); created → task ended median "
      f"{statistics.median(end):.1f} ms")
PY
