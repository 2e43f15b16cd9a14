#!/usr/bin/env bash
# Throughput at the peers' own method (issue #19, item 4): a sustained load of two-task DAG
# runs, triggered through the API and by cron, at increasing rates, until the p95 from
# trigger to success passes 250 ms. The services run as a deployment would: one `weir
# scheduler`, one `weir web` (the API), WORKERS `weir worker` processes (default 2), each
# with the defaults (a worker runs 8 tries at once, a DAG 16 runs and 16 tasks).
#
# The load: DAGS manual DAGs `tp_01`… (default 20; `a` then `b`, TASK each: `noop` by
# default, or `shell` for `true` in bash) triggered round-robin by bench/src/bin/throughput.rs
# at RATES runs per minute (open loop: every trigger its own request, on time whatever the
# answers), SECONDS_PER_RATE at each (default 300); beside them CRON DAGs (default 20) on
# `* * * * *`, all firing at each minute. Per rate the script reports:
#   - runs completed per minute while the load ran (API and cron), and the backlog left;
#   - trigger → success p50/p95/max: an API run from the request's start to the run's
#     recorded end; a cron run from its fire time (its interval's end) to its end;
#   - CPU: the weir processes' user + sys (and the Postgres server's) per 1,000 runs.
# BACKEND=postgres (default; PGURL, a database weir_bench_tp made afresh) or sqlite.
# BIN: a folder holding `weir` and `throughput` built elsewhere (bench/compare.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir -p weir-bench; fi
bin=$(realpath "${BIN:-target/release}")
backend=${BACKEND:-postgres}
rates=${RATES:-5000 10000 20000 30000}
seconds=${SECONDS_PER_RATE:-300}
dags=${DAGS:-20}
cron=${CRON:-20}
workers=${WORKERS:-2}
task=${TASK:-noop}
port=${PORT:-18091}
pg=${PGURL:-postgres://postgres@127.0.0.1:5432}
tmp=$(mktemp -d)
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap stop EXIT

case $backend in
  postgres)
    psql -q "$pg/postgres" -c "drop database if exists weir_bench_tp" -c "create database weir_bench_tp"
    export WEIR_DATABASE_URL="$pg/weir_bench_tp" ;;
  sqlite) export WEIR_DATABASE_URL="sqlite://$tmp/weir.db" ;;
  *) echo "BACKEND: postgres or sqlite" >&2; exit 2 ;;
esac
export WEIR_DAGS_FOLDER="$tmp/dags" WEIR_WEB_BIND="127.0.0.1:$port"
mkdir -p "$tmp/dags"
case $task in
  noop) step='{kind: noop}' ;;
  shell) step='{kind: shell, run: "true"}' ;;
  *) echo "TASK: noop or shell" >&2; exit 2 ;;
esac
for n in $(seq 1 "$dags"); do
  i=$(printf %02d "$n")
  printf 'id: tp_%s\ntasks:\n  a: %s\n  b: {%s, depends_on: a}\n' "$i" "$step" "${step:1:-1}" \
    >"$tmp/dags/tp_$i.yaml"
done
for i in $(seq 1 "$cron"); do
  printf 'id: cron_%02d\nschedule: "* * * * *"\nstart_date: %s\ntasks:\n  a: %s\n  b: {%s, depends_on: a}\n' \
    "$i" "$(date -u +%F)" "$step" "${step:1:-1}" >"$tmp/dags/cron_$i.yaml"
done
"$bin/weir" db migrate >/dev/null
"$bin/weir" dags list >/dev/null
echo "bench-password" | "$bin/weir" users create bench --role operator --password-stdin >/dev/null
token=$("$bin/weir" users token bench 2>/dev/null)

"$bin/weir" scheduler >"$tmp/scheduler.log" 2>&1 &
pids+=($!)
"$bin/weir" web >"$tmp/web.log" 2>&1 &
pids+=($!)
for w in $(seq "$workers"); do
  "$bin/weir" worker >"$tmp/worker-$w.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

# user + sys ticks: the scheduler, the web server, the workers together, the Postgres server's
# processes alive now.
ticks() {
  local all=() p w=0 server=0
  for p in "${pids[@]}"; do all+=("$(awk '{print $14 + $15}' "/proc/$p/stat")"); done
  for p in "${all[@]:2}"; do w=$((w + p)); done
  if [ "$backend" = postgres ]; then
    for p in $(pgrep -u postgres -x postgres || true); do
      server=$((server + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
  fi
  echo "${all[0]} ${all[1]} $w $server"
}
unfinished() {
  local q="select count(*) from weir_runs where state not in ('success', 'failed')"
  if [ "$backend" = postgres ]; then psql -qAt "$WEIR_DATABASE_URL" -c "$q"
  else python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])" "$tmp/weir.db" "$q"; fi
}

echo "throughput [$backend, $workers workers, $task tasks]: $dags API DAGs, $cron cron DAGs (* * * * *), ${seconds} s per rate"
# A warm-up: every DAG once, pools and caches filled.
"$bin/throughput" "http://127.0.0.1:$port" "$token" 600 "$(echo "$dags / 10" | bc -l)" "$dags" "$tmp/warmup.csv" >/dev/null
for r in $rates; do
  before=$(ticks)
  from=$(date +%s.%N)
  "$bin/throughput" "http://127.0.0.1:$port" "$token" "$r" "$seconds" "$dags" "$tmp/sent-$r.csv" \
    | sed "s/^/$r\/min:/"
  to=$(date +%s.%N)
  after=$(ticks)
  backlog=$(unfinished)
  # Drain: every run finished before the next rate (up to 10 minutes).
  for _ in $(seq 6000); do [ "$(unfinished)" = 0 ] && break; sleep 0.1; done
  drained=$(date +%s.%N)
  python3 - "$backend" "$WEIR_DATABASE_URL" "$tmp/weir.db" "$tmp/sent-$r.csv" "$r" "$from" "$to" \
    "$drained" "$backlog" "$before" "$after" <<'PY' | tee "$tmp/stage"
import csv, statistics, subprocess, sys
from datetime import datetime
backend, url, dbfile, sent_file, rate, t0, t1, drained, backlog, before, after = sys.argv[1:]
t0, t1, drained = float(t0), float(t1), float(drained)
# Every run's id, end (Unix seconds), state and, for scheduled runs, the fire time.
q = ("select run_id, {end}, state, run_type, {fire} from weir_runs where dag_id like 'tp\\_%' escape '\\' "
     "or dag_id like 'cron\\_%' escape '\\'")
if backend == "postgres":
    out = subprocess.run(["psql", "-qAt", "-F", "\t", url, "-c", q.format(
        end="extract(epoch from ended_at)", fire="extract(epoch from data_interval_end)")],
        check=True, capture_output=True, text=True).stdout
    rows = [l.split("\t") for l in out.splitlines()]
    num = lambda s: float(s) if s else None
else:
    import sqlite3
    rows = sqlite3.connect(dbfile).execute(q.format(end="ended_at", fire="data_interval_end")).fetchall()
    num = lambda s: datetime.fromisoformat(s).timestamp() if s else None
runs = {r[0]: (num(r[1]), r[2], r[3], num(r[4])) for r in rows}
# Where an API run's time went: its creation, start, each task's queueing, start and end.
q2 = ("select r.run_id, r.created_at, r.started_at, a.queued_at, a.started_at, a.ended_at, b.queued_at, "
      "b.started_at, b.ended_at, r.ended_at from weir_runs r "
      "join weir_task_instances a on a.run_id = r.run_id and a.task_id = 'a' "
      "join weir_task_instances b on b.run_id = r.run_id and b.task_id = 'b' where r.dag_id like 'tp\\_%' escape '\\'")
if backend == "postgres":
    cols = ", ".join(f"extract(epoch from {c})" for c in q2[len("select r.run_id, "):q2.index(" from")].split(", "))
    q2 = "select r.run_id, " + cols + q2[q2.index(" from"):]
    out = subprocess.run(["psql", "-qAt", "-F", "\t", url, "-c", q2], check=True, capture_output=True, text=True).stdout
    steps = {l.split("\t")[0]: [num(x) for x in l.split("\t")[1:]] for l in out.splitlines()}
else:
    steps = {r[0]: [num(x) for x in r[1:]] for r in sqlite3.connect(dbfile).execute(q2)}
lat, failed = [], 0
for run_id, sent, status in csv.reader(open(sent_file)):
    if status != "201":
        continue
    end, state, _, _ = runs[run_id]
    failed += state != "success"
    lat.append(end - int(sent) / 1e6)
cron_lat = [end - fire for end, state, kind, fire in runs.values()
            if kind == "scheduled" and fire is not None and t0 <= fire <= t1 and end is not None]
done = sum(1 for end, *_ in runs.values() if end is not None and t0 <= end <= t1)
pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000
minutes = (t1 - t0) / 60
print(f"{rate}/min: completed {done / minutes:.0f} runs/min while loaded ({done} in {t1 - t0:.0f} s), "
      f"backlog at the end {backlog} runs, drained in {drained - t1:.1f} s, {failed} failed")
print(f"{rate}/min: API trigger → success p50 {pct(lat, 0.5):.0f} ms, p95 {pct(lat, 0.95):.0f} ms, "
      f"max {pct(lat, 1):.0f} ms ({len(lat)} runs)"
      + (f"; cron fire → success p50 {pct(cron_lat, 0.5):.0f} ms, p95 {pct(cron_lat, 0.95):.0f} ms "
         f"({len(cron_lat)} runs)" if cron_lat else ""))
names = ["created → run started", "→ a queued", "→ a started", "a ran", "→ b queued", "→ b started", "b ran",
         "→ run ended"]
mine = [steps[r[0]] for r in csv.reader(open(sent_file)) if r[2] == "201" and r[0] in steps]
waits = [statistics.median(x[i + 1] - x[i] for x in mine if x[i] and x[i + 1]) * 1000 for i in range(len(names))]
print(f"{rate}/min: medians: " + ", ".join(f"{n} {w:.1f} ms" for n, w in zip(names, waits)))
b = list(map(int, before.split())); a = list(map(int, after.split()))
cpu = [(y - x) * 1000 / max(done, 1) / 100 for x, y in zip(b, a)]
print(f"{rate}/min: CPU per 1,000 runs: weir {sum(cpu[:3]):.2f} core-s (scheduler {cpu[0]:.2f}, web {cpu[1]:.2f}, "
      f"workers {cpu[2]:.2f})" + (f", Postgres server {cpu[3]:.2f} core-s" if backend == "postgres" else ""))
PY
  # The curve ends at the first rate whose p95 passes 250 ms.
  p95=$(sed -n 's/.*API trigger → success p50 [0-9]* ms, p95 \([0-9]*\) ms.*/\1/p' "$tmp/stage")
  if [ "${p95:-0}" -gt 250 ]; then break; fi
done
