#!/usr/bin/env bash
# Python steps (issue: Python and dbt steps), release build:
#  - a chain of 20 `python` tasks sharing one warm environment, on SQLite and on Postgres,
#    next to the bare interpreter (`python3 -c pass`) timed in the same process: the overhead
#    weir adds to a Python task;
#  - environment creation with uv: with nothing downloaded, with uv's download cache warm,
#    and the lookup of an existing one, for a small package and for pandas.
# Postgres: WEIR_BENCH_POSTGRES_URL (default the local server); a fresh database per run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir-bench; fi
bin=$(realpath "${BIN:-target/release}")
pg_admin=${WEIR_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
rounds=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for i in $(seq "$rounds"); do
  "$bin/engine" python-chain "sqlite://$tmp/chain-$i.db"
  name="weir_bench_$$_py$i"
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null 2>&1
  "$bin/engine" python-chain "${pg_admin%/*}/$name"
done
for i in $(seq "$rounds"); do
  "$bin/pyenv" six==1.16.0
  "$bin/pyenv" pandas==2.3.3
done
