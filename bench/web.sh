#!/usr/bin/env bash
# Web benchmark (issue: web UI). A metadata database holding 10,000 runs x 30 tasks of one
# DAG (300,000 task instances; 1 run in 50 failed), 9 smaller DAGs of 100 runs each, and one
# task instance with a 100 MB log (1,000,000 lines), on each of BACKENDS (default "postgres
# sqlite"; Postgres at PGURL, default the local server). A release `weir web` serves it;
# `wrk` (Debian's) requests each page for DURATION seconds with CONNECTIONS connections, and
# the script reports, per page:
#   - the server time p50/p95/max, from weir's own access log (`weir::access`, ms per request);
#   - wrk's client-side latency p50/p95/p99 and requests/s;
# and the server's peak RSS (VmHWM) after all of it (the log tail must not read the whole log).
# Needs: psql and a Postgres, sqlite3, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
# BIN: a folder holding a `weir` built elsewhere (bench/compare.sh); else built here.
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir; fi
weir=$(realpath "${BIN:-target/release}")/weir
pg=${PGURL:-postgres://postgres@127.0.0.1:5432}
db=weir_bench_web
duration=${DURATION:-10}
conns=${CONNECTIONS:-2}
port=${PORT:-18080}
tmp=$(mktemp -d)
server=
trap '[ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export WEIR_DAGS_FOLDER="$tmp/dags"
mkdir -p "$tmp/dags"

# bench_30: 30 tasks in 6 layers of 5, each depending on two of the layer before.
python3 - "$tmp/dags" <<'PY'
import sys
d = sys.argv[1]
lines = ["id: bench_30", "schedule: '@hourly'", "start_date: 2020-01-01", "paused: true", "tags: [bench]", "tasks:"]
for k in range(1, 31):
    layer = (k - 1) // 5
    deps = "" if layer == 0 else f", depends_on: [t{(layer - 1) * 5 + 1 + (k % 5):02d}, t{(layer - 1) * 5 + 1 + ((k + 2) % 5):02d}]"
    lines.append(f"  t{k:02d}: {{kind: noop{deps}}}")
open(f"{d}/bench_30.yaml", "w").write("\n".join(lines) + "\n")
for n in range(1, 10):
    open(f"{d}/small_{n}.yaml", "w").write(
        f"id: small_{n}\nschedule: '@daily'\nstart_date: 2020-01-01\npaused: true\ntags: [small]\n"
        "tasks:\n  a: {kind: noop}\n  b: {kind: noop, depends_on: a}\n  c: {kind: noop, depends_on: b}\n")
PY

. bench/lib/web.sh

# Fills the Postgres database $db, created afresh (its URL in WEIR_DATABASE_URL).
fill_postgres() {
  psql -q "$pg/postgres" -c "drop database if exists $db" -c "create database $db"
  export WEIR_DATABASE_URL="$pg/$db"
  # Commands other than the services never create a database: migrate first, then `dags
  # list` stores the DAGs.
  "$weir" db migrate >/dev/null
  "$weir" dags list >/dev/null
  psql -q "$WEIR_DATABASE_URL" <<'SQL'
insert into weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
                       data_interval_end, params, created_at, started_at, ended_at)
select d.dag_id || '__' || to_char(s.ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), d.dag_id, d.version_id,
       'scheduled', case when s.i % 50 = 0 then 'failed' else 'success' end,
       s.ts, s.ts, s.ts + interval '1 hour', '{}', s.ts, s.ts, s.ts + interval '5 minutes'
from weir_dags d
cross join lateral (
    select i, timestamptz '2020-01-01 00:00Z' + i * interval '1 hour' as ts
    from generate_series(1, case when d.dag_id = 'bench_30' then 10000 else 100 end) i
) s;
insert into weir_task_instances (run_id, dag_id, task_id, state, try_number, max_tries, queue,
                                 queued_at, started_at, ended_at, worker_id)
select r.run_id, r.dag_id, t.task_id,
       case when r.state = 'failed' and t.last then 'failed' else 'success' end,
       1, 1, 'default', r.started_at, r.started_at + t.k * interval '5 s',
       r.started_at + t.k * interval '5 s' + interval '4 s', 'bench-worker'
from weir_runs r
join (
    select 'bench_30' as dag_id, 't' || lpad(k::text, 2, '0') as task_id, k, k = 30 as last from generate_series(1, 30) k
    union all
    select d.dag_id, x.task_id, x.k, x.k = 3 from weir_dags d
    cross join (values ('a', 1), ('b', 2), ('c', 3)) as x(task_id, k) where d.dag_id like 'small_%'
) t on t.dag_id = r.dag_id;
insert into weir_task_logs (ti_id, try_number, stream, line, at)
select (select id from weir_task_instances where dag_id = 'bench_30' and task_id = 't01' order by id desc limit 1),
       1, 'stdout', 'line ' || i || ' ' || repeat('x', 88), timestamptz '2021-02-21 16:00Z' + i * interval '1 ms'
from generate_series(1, 1000000) i;
analyze;
SQL
}

# The same rows in the SQLite file $tmp/web.db (its URL in WEIR_DATABASE_URL).
fill_sqlite() {
  rm -rf "$tmp"/web.db*
  export WEIR_DATABASE_URL="sqlite://$tmp/web.db"
  "$weir" db migrate >/dev/null
  "$weir" dags list >/dev/null
  sqlite3 "$tmp/web.db" >/dev/null <<'SQL'
pragma journal_mode = wal;
with recursive s(i) as (select 1 union all select i + 1 from s where i < 10000)
insert into weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
                       data_interval_end, params, created_at, started_at, ended_at)
select d.dag_id || '__' || strftime('%Y-%m-%dT%H:%M:%SZ', '2020-01-01', '+' || s.i || ' hours'), d.dag_id, d.version_id,
       'scheduled', case when s.i % 50 = 0 then 'failed' else 'success' end,
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || s.i || ' hours'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || s.i || ' hours'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || (s.i + 1) || ' hours'),
       '{}',
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || s.i || ' hours'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || s.i || ' hours'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || s.i || ' hours', '+5 minutes')
from weir_dags d join s on s.i <= case when d.dag_id = 'bench_30' then 10000 else 100 end;
with recursive k(k) as (select 1 union all select k + 1 from k where k < 30),
tasks(dag_id, task_id, k, last) as (
    select 'bench_30', 't' || printf('%02d', k), k, k = 30 from k
    union all
    select d.dag_id, x.task_id, x.k, x.k = 3 from weir_dags d
    cross join (select 'a' as task_id, 1 as k union all select 'b', 2 union all select 'c', 3) x
    where d.dag_id like 'small_%')
insert into weir_task_instances (run_id, dag_id, task_id, state, try_number, max_tries, queue,
                                 queued_at, started_at, ended_at, worker_id)
select r.run_id, r.dag_id, t.task_id,
       case when r.state = 'failed' and t.last then 'failed' else 'success' end,
       1, 1, 'default', r.started_at,
       strftime('%Y-%m-%dT%H:%M:%S+00:00', r.started_at, '+' || (t.k * 5) || ' seconds'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', r.started_at, '+' || (t.k * 5 + 4) || ' seconds'),
       'bench-worker'
from weir_runs r join tasks t on t.dag_id = r.dag_id
order by r.logical_date, t.k;
with recursive s(i) as (select 1 union all select i + 1 from s where i < 1000000)
insert into weir_task_logs (ti_id, try_number, stream, line, at)
select (select id from weir_task_instances where dag_id = 'bench_30' and task_id = 't01' order by id desc limit 1),
       1, 'stdout', 'line ' || i || ' ' || printf('%.88c', 'x'),
       strftime('%Y-%m-%dT%H:%M:%f+00:00', '2021-02-21 16:00', '+' || (i / 1000.0) || ' seconds')
from s;
analyze;
SQL
}

# A query's single value on the database being measured.
query() {
  case $WEIR_DATABASE_URL in
    sqlite://*) sqlite3 "${WEIR_DATABASE_URL#sqlite://}" "$1" ;;
    *) psql -qAt "$WEIR_DATABASE_URL" -c "$1" ;;
  esac
}

for backend in ${BACKENDS:-postgres sqlite}; do
  echo "== $backend"
  echo "filling the database: 10,000 runs x 30 tasks, 9 x 100 runs x 3 tasks, a 100 MB log..."
  "fill_$backend"
  echo "$(query "select count(*) from weir_runs") runs, $(query "select count(*) from weir_task_instances") task instances, $(query "select count(*) from weir_task_logs") log lines"

  echo "bench-password" | "$weir" users create bench --role viewer --password-stdin >/dev/null
  token=$("$weir" users token bench 2>/dev/null)
  RUST_LOG=weir::access=info WEIR_WEB_BIND=127.0.0.1:$port "$weir" web 2>"$tmp/access.log" &
  server=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done

  # The run whose t01 has the 100 MB log (the newest run).
  run=$(query "select t.run_id from weir_task_logs l join weir_task_instances t on t.id = l.ti_id limit 1")
  pages=(
    "/"
    "/api/v1/dags"
    "/dags/bench_30"
    "/api/v1/dags/bench_30/grid"
    "/dags/bench_30?runs=100"
    "/dags/bench_30?tab=runs&page=100"
    "/runs/$run"
    "/runs/$run/tasks/t01"
    "/api/v1/runs/$run/tasks/t01/logs?tail=500"
  )
  for page in "${pages[@]}"; do
    echo "$page"
    bench_page "http://127.0.0.1:$port" "$page" "$token" "$tmp/access.log" "$conns" "$duration"
  done

  echo "whole 100 MB log, streamed once:"
  start=$(date +%s.%N)
  bytes=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/runs/$run/tasks/t01/logs" | wc -c)
  echo "  $bytes bytes in $(echo "$(date +%s.%N) - $start" | bc) s"
  echo "server peak RSS: $(grep VmHWM /proc/$server/status | awk '{print $2/1024 " MB"}')"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
done
