#!/usr/bin/env bash
# Flat under history (issue #19, item 5): the engine's benchmarks (bench/src/bin/engine.rs:
# chain100, fanout1000, fanout-noop1000) on a database that already holds HISTORY finished task
# instances (default 10,000,000: 1 run in 10 tasks, one DAG, 1 run in 50 failed), next to the
# same benchmarks on an empty database, alternating, ROUNDS times (default 2), on SQLite and on
# Postgres (the local server over its Unix socket; PGURL for another). The history is generated
# in bulk by SQL after `weir db migrate` and `weir dags list` stored its DAG; filling takes
# minutes and gigabytes (about 4 GB on Postgres): the filled databases are built once per run.
set -euo pipefail
cd "$(dirname "$0")/.."
# BIN: a folder holding `weir` and `engine` built elsewhere (bench/compare.sh); else built here.
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir-bench -p weir; fi
bin=$(realpath "${BIN:-target/release}")
history=${HISTORY:-10000000}
runs=$((history / 10))
rounds=${ROUNDS:-2}
benches=${BENCHES:-chain fanout fanout-noop}
pg_admin=${PGURL:-postgres://postgres@localhost/postgres?host=/var/run/postgresql}
# psql: no NOTICE for the DROP DATABASE IF EXISTS of a database not there.
export PGOPTIONS="-c client_min_messages=warning"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dags"
cat > "$tmp/dags/history.yaml" <<'YAML'
id: history
schedule: '@daily'
start_date: 2000-01-01
paused: true
tasks:
  t1: {kind: noop}
YAML

pg_url() { echo "${pg_admin/\/postgres\?//$1?}"; }
fresh_pg() {
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  pg_url "$1"
}
# The history's DAG stored the way a user's is, then its runs and instances in bulk.
store_dag() {
  WEIR_DATABASE_URL=$1 WEIR_DAGS_FOLDER=$tmp/dags "$bin/weir" db migrate >/dev/null
  WEIR_DATABASE_URL=$1 WEIR_DAGS_FOLDER=$tmp/dags "$bin/weir" dags list >/dev/null
}

start=$(date +%s)
pg_full=$(fresh_pg weir_bench_history)
store_dag "$pg_full"
psql -q "$pg_full" <<SQL
insert into weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
                       data_interval_end, params, created_at, started_at, ended_at)
select 'history__' || i, d.dag_id, d.version_id, 'scheduled',
       case when i % 50 = 0 then 'failed' else 'success' end,
       ts, ts, ts + interval '1 minute', '{}', ts, ts, ts + interval '30 seconds'
from weir_dags d,
     lateral (select i, timestamptz '2000-01-01 00:00Z' + i * interval '1 minute' as ts
              from generate_series(1, $runs) i) s
where d.dag_id = 'history';
insert into weir_task_instances (run_id, dag_id, task_id, state, try_number, max_tries, queue,
                                 queued_at, started_at, ended_at, worker_id)
select r.run_id, r.dag_id, 't' || k, case when r.state = 'failed' and k = 10 then 'failed' else 'success' end,
       1, 1, 'default', r.started_at, r.started_at, r.ended_at, 'history-worker'
from weir_runs r, generate_series(1, 10) k
where r.dag_id = 'history';
analyze;
SQL
echo "Postgres: $(psql -qAt "$pg_full" -c "select count(*) from weir_task_instances") finished task instances, $(psql -qAt "$pg_full" -c "select pg_size_pretty(pg_database_size(current_database()))"), filled in $(( $(date +%s) - start )) s"

start=$(date +%s)
sqlite_full=$tmp/history.db
store_dag "sqlite://$sqlite_full"
sqlite3 "$sqlite_full" >/dev/null <<SQL
pragma journal_mode = wal;
insert into weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
                       data_interval_end, params, created_at, started_at, ended_at)
with recursive s(i) as (select 1 union all select i + 1 from s where i < $runs)
select 'history__' || i, d.dag_id, d.version_id, 'scheduled',
       case when i % 50 = 0 then 'failed' else 'success' end,
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2000-01-01', '+' || i || ' minutes'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2000-01-01', '+' || i || ' minutes'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2000-01-01', '+' || (i + 1) || ' minutes'),
       '{}',
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2000-01-01', '+' || i || ' minutes'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2000-01-01', '+' || i || ' minutes'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2000-01-01', '+' || i || ' minutes', '+30 seconds')
from weir_dags d, s
where d.dag_id = 'history';
with recursive k(k) as (select 1 union all select k + 1 from k where k < 10)
insert into weir_task_instances (run_id, dag_id, task_id, state, try_number, max_tries, queue,
                                 queued_at, started_at, ended_at, worker_id)
select r.run_id, r.dag_id, 't' || k, case when r.state = 'failed' and k = 10 then 'failed' else 'success' end,
       1, 1, 'default', r.started_at, r.started_at, r.ended_at, 'history-worker'
from weir_runs r, k
where r.dag_id = 'history';
analyze;
SQL
echo "SQLite: $(sqlite3 "$sqlite_full" "select count(*) from weir_task_instances") finished task instances, $(du -h "$sqlite_full" | cut -f1), filled in $(( $(date +%s) - start )) s"

# The engine adds its own DAGs and runs to the filled database round after round (a few
# thousand rows against millions); the empty side gets a fresh database each time.
for bench in $benches; do
  for i in $(seq "$rounds"); do
    "$bin/engine" "$bench" "sqlite://$tmp/empty-$bench-$i.db" 2>&1 | sed 's/\[sqlite\]/[sqlite, empty]/'
    "$bin/engine" "$bench" "sqlite://$sqlite_full" 2>&1 | sed "s/\[sqlite\]/[sqlite, $history finished]/"
    "$bin/engine" "$bench" "$(fresh_pg "weir_bench_history_empty")" 2>&1 | sed 's/\[postgres\]/[postgres, empty]/'
    "$bin/engine" "$bench" "$pg_full" 2>&1 | sed "s/\[postgres\]/[postgres, $history finished]/"
  done
done
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS weir_bench_history_empty WITH (FORCE)" >/dev/null
