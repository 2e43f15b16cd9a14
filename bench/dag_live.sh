#!/usr/bin/env bash
# New DAGs live (issue: engine efficiency, item 6): a DAG file written while the scheduler
# runs, and the time until the store has it, on SQLite and Postgres; with the folder watched
# (the default) next to the scan alone (the baseline), in the same run. Then the parse of
# 1,000 files x 50 tasks (bench/parse.sh's figure, `weir dags validate`, 5 runs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir-bench -p weir; fi
bin=$(realpath "${BIN:-target/release}")
pg_admin=${WEIR_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin/dag_live" "sqlite://$tmp/live.db"
name="weir_bench_$$_live"
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null 2>&1
"$bin/dag_live" "${pg_admin%/*}/$name"
"$bin/parse_dags" --write "$tmp/dags" >/dev/null
for _ in 1 2 3 4 5; do
  /usr/bin/time -f "weir dags validate (1000 files x 50 tasks): %e s wall, %U s user, %S s sys" \
    "$bin/weir" dags validate "$tmp/dags" >/dev/null
done
