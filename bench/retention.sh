#!/usr/bin/env bash
# Retention beside the scheduler (issue #19, item 5): `weir standalone` (its defaults) on a
# database holding HISTORY finished task instances (default 10,000,000; bench/lib/history.sh),
# all years old. With `keep_runs` at its default (90 days) its retention starts deleting them
# as it starts; with `keep_runs = 36500d` (the baseline, the same history) nothing goes.
# Meanwhile a run of a one-task DAG (`noop`) is triggered from the CLI every PROBE_EVERY
# seconds (0.5) for WINDOW seconds (60). Per backend and phase: each probe's creation → its
# task's end (p50 / p95 / max; a probe not ended 30 s after the window counts as missing), the
# scheduler's pass times where the build logs them (`weir::pass` at debug), and the history
# runs deleted in the window. SQLite and Postgres (its Unix socket; PGURL for another).
# The filled databases are kept between calls (bench/lib/history.sh; KEEP=0 rebuilds them),
# so bench/compare.sh can run it for two builds: builds with different migrations need KEEP=0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir; fi
bin=$(realpath "${BIN:-target/release}")
history=${HISTORY:-10000000}
runs=$((history / 10))
window=${WINDOW:-60}
every=${PROBE_EVERY:-0.5}
backends=${BACKENDS:-sqlite postgres}
. bench/lib/history.sh
history_dag "$tmp/dags"
printf 'id: probe\ntasks:\n  t: {kind: noop}\n' >"$tmp/dags/probe.yaml"

keep_history "$history" "$tmp/dags"

# A fresh copy of the filled database for backend $1; prints its URL.
copy() {
  case $1 in
    postgres) copy_history_pg "$history" weir_bench_retention ;;
    sqlite) copy_history_sqlite "$history" "$tmp/retention.db" ;;
  esac
}

# Prints the query's rows (`|`-separated) on backend $1, database URL $2.
query() {
  case $1 in
    postgres) psql -qAt "$2" -c "$3" ;;
    sqlite) sqlite3 "${2#sqlite://}" "$3" ;;
  esac
}

# Milliseconds from a run's creation to its task's end, per probe (empty: not ended).
probe_sql() {
  case $1 in
    postgres) echo "select coalesce(extract(epoch from (t.ended_at - r.created_at)) * 1000, -1)
                    from weir_runs r left join weir_task_instances t on t.run_id = r.run_id
                    where r.dag_id = 'probe'" ;;
    sqlite) echo "select coalesce((julianday(t.ended_at) - julianday(r.created_at)) * 86400000, -1)
                  from weir_runs r left join weir_task_instances t on t.run_id = r.run_id
                  where r.dag_id = 'probe'" ;;
  esac
}

for backend in $backends; do
  for keep in 36500d 90d; do
    url=$(copy "$backend")
    phase=$([ "$keep" = 36500d ] && echo "no retention (keep_runs 36500d)" || echo "retention on (keep_runs 90d)")
    RUST_LOG=warn,weir::pass=debug WEIR_DATABASE_URL=$url WEIR_DAGS_FOLDER=$tmp/dags \
      WEIR_RETENTION_KEEP_RUNS=$keep WEIR_WEB_BIND=127.0.0.1:0 \
      "$bin/weir" standalone >"$tmp/standalone.log" 2>&1 &
    server=$!
    for _ in $(seq 300); do grep -q "web UI at" "$tmp/standalone.log" 2>/dev/null && break; sleep 0.1; done
    end=$(( $(date +%s) + window ))
    while [ "$(date +%s)" -lt "$end" ]; do
      WEIR_DATABASE_URL=$url WEIR_DAGS_FOLDER=$tmp/dags "$bin/weir" trigger probe >/dev/null 2>>"$tmp/trigger.err" &
      sleep "$every"
    done
    left=$(query "$backend" "$url" "select count(*) from weir_runs where dag_id = 'history'")
    wait_until=$(( $(date +%s) + 30 ))
    while [ "$(date +%s)" -lt "$wait_until" ] \
      && [ "$(query "$backend" "$url" "select count(*) from weir_runs where dag_id = 'probe' and state not in ('success', 'failed')")" != 0 ]; do
      sleep 0.5
    done
    kill "$server"; wait "$server" 2>/dev/null || true; server=
    query "$backend" "$url" "$(probe_sql "$backend")" >"$tmp/probes"
    python3 - "$tmp/probes" "$tmp/standalone.log" "$backend" "$phase" "$runs" "$left" "$window" <<'PY'
import re, statistics, sys
probes, log, backend, phase, runs, left, window = sys.argv[1:8]
ended = sorted(float(x) for x in open(probes).read().split() if float(x) >= 0)
missing = sum(1 for x in open(probes).read().split() if float(x) < 0)
def pct(xs, p): return xs[min(len(xs) - 1, int(len(xs) * p))]
line = f"[{backend}, {int(runs) * 10:,} finished, {phase}] "
if ended:
    line += (f"{len(ended)} probes: created → ended p50 {statistics.median(ended):.0f} ms, "
             f"p95 {pct(ended, 0.95):.0f} ms, max {ended[-1]:.0f} ms")
else:
    line += "no probe ended"
line += f"; {missing} not ended"
passes = sorted(float(m) for m in re.findall(r"weir::pass: pass ms=([0-9.]+)", open(log).read()))
if passes:
    line += (f"; {len(passes)} passes p50 {statistics.median(passes):.1f} ms, "
             f"p95 {pct(passes, 0.95):.1f} ms, max {passes[-1]:.0f} ms")
deleted = int(runs) - int(left)
line += f"; {deleted:,} history runs deleted ({deleted * 10:,} instances, {deleted / int(window):,.0f} runs/s over the window)"
print(line)
PY
  done
done
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS weir_bench_retention WITH (FORCE)" >/dev/null
