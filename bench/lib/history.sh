# Sourced by bench/history.sh and bench/retention.sh: a metadata database filled in bulk with
# finished history, the way a user's accumulates: RUNS runs of the one-task-per-row DAG
# `history` (10 tasks a run, 1 run in 50 failed; one run a minute from 2000-01-01, so every
# run is years old), stored after `weir db migrate` and `weir dags list` stored the DAG.
# The filled databases are kept between calls (a Postgres template database, a file under
# target/bench-history; KEEP=0 rebuilds them): the benchmarks work on copies.
# Needs: $bin (a folder holding `weir`), psql, sqlite3. Sets: $pg_admin (PGURL, default the
# local server's `postgres` database over its Unix socket), $tmp (a scratch folder, removed on
# exit with the server whose pid the script keeps in $server).

pg_admin=${PGURL:-postgres://postgres@localhost/postgres?host=/var/run/postgresql}
# psql: no NOTICE for the DROP DATABASE IF EXISTS of a database not there.
export PGOPTIONS="-c client_min_messages=warning"
tmp=$(mktemp -d)
server=
trap '[ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$tmp"' EXIT

# The history's DAG file, in the folder $1.
history_dag() {
  mkdir -p "$1"
  cat > "$1/history.yaml" <<'YAML'
id: history
schedule: '@daily'
start_date: 2000-01-01
paused: true
tasks:
  t1: {kind: noop}
YAML
}

# Migrates the database $1 and stores the DAGs of the folder $2, as a user's commands do.
store_dags() {
  WEIR_DATABASE_URL=$1 WEIR_DAGS_FOLDER=$2 "$bin/weir" db migrate >/dev/null
  WEIR_DATABASE_URL=$1 WEIR_DAGS_FOLDER=$2 "$bin/weir" dags list >/dev/null
}

# Fills the Postgres database at URL $1 (its DAGs stored) with $2 runs of `history`.
fill_history_pg() {
  psql -q "$1" <<SQL
insert into weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
                       data_interval_end, params, created_at, started_at, ended_at)
select 'history__' || i, d.dag_id, d.version_id, 'scheduled',
       case when i % 50 = 0 then 'failed' else 'success' end,
       ts, ts, ts + interval '1 minute', '{}', ts, ts, ts + interval '30 seconds'
from weir_dags d,
     lateral (select i, timestamptz '2000-01-01 00:00Z' + i * interval '1 minute' as ts
              from generate_series(1, $2) i) s
where d.dag_id = 'history';
insert into weir_task_instances (run_id, dag_id, task_id, state, try_number, max_tries, queue,
                                 queued_at, started_at, ended_at, worker_id)
select r.run_id, r.dag_id, 't' || k, case when r.state = 'failed' and k = 10 then 'failed' else 'success' end,
       1, 1, 'default', r.started_at, r.started_at, r.ended_at, 'history-worker'
from weir_runs r, generate_series(1, 10) k
where r.dag_id = 'history';
analyze;
SQL
}

# Fills the SQLite database file $1 (its DAGs stored) with $2 runs of `history`.
fill_history_sqlite() {
  sqlite3 "$1" >/dev/null <<SQL
pragma journal_mode = wal;
insert into weir_runs (run_id, dag_id, version_id, run_type, state, logical_date, data_interval_start,
                       data_interval_end, params, created_at, started_at, ended_at)
with recursive s(i) as (select 1 union all select i + 1 from s where i < $2)
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
}

# The URL of the Postgres database $1 on the server of $pg_admin.
pg_url() { echo "${pg_admin/\/postgres\?//$1?}"; }

# Fills the kept databases with $1 finished task instances unless they are there: a Postgres
# template database `weir_bench_history_$1`, the SQLite file target/bench-history/history-$1.db.
# $2: a folder holding the history's DAG file.
keep_history() {
  local pg_template=weir_bench_history_$1 sqlite_template=$PWD/target/bench-history/history-$1.db start
  mkdir -p "$(dirname "$sqlite_template")"
  if [ "${KEEP:-1}" = 0 ] || ! psql -qAt "$pg_admin" -c "select 1 from pg_database where datname = '$pg_template'" | grep -q 1; then
    start=$(date +%s)
    psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $pg_template WITH (FORCE)" -c "CREATE DATABASE $pg_template" >/dev/null
    store_dags "$(pg_url "$pg_template")" "$2"
    fill_history_pg "$(pg_url "$pg_template")" $(($1 / 10))
    echo "Postgres: $1 finished task instances filled in $(( $(date +%s) - start )) s"
  fi
  if [ "${KEEP:-1}" = 0 ] || [ ! -f "$sqlite_template" ]; then
    start=$(date +%s)
    rm -f "$sqlite_template"
    store_dags "sqlite://$sqlite_template" "$2"
    fill_history_sqlite "$sqlite_template" $(($1 / 10))
    echo "SQLite: $1 finished task instances filled in $(( $(date +%s) - start )) s"
  fi
}

# A fresh copy of the kept history of $1 instances: the Postgres database $2 (prints its URL).
copy_history_pg() {
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $2 WITH (FORCE)" \
    -c "CREATE DATABASE $2 TEMPLATE weir_bench_history_$1 STRATEGY FILE_COPY" >/dev/null
  pg_url "$2"
}

# A fresh copy of the kept history of $1 instances: the SQLite file $2 (prints its URL).
copy_history_sqlite() {
  rm -rf "$2" "$2"-* "$2".wake
  cp "$PWD/target/bench-history/history-$1.db" "$2"
  echo "sqlite://$2"
}
