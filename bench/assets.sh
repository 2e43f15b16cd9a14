#!/usr/bin/env bash
# Asset scheduling (issue #17), on SQLite and on Postgres: the time from an asset event to the
# consumer's run being created (1,000 assets, 200 DAGs on 5 each, 10,000 events recorded
# before; target p95 <= 100 ms), and a full scheduler pass with the DAGs on cron (the
# baseline) and on assets. Postgres: WEIR_BENCH_POSTGRES_URL (default the local server), a
# fresh database per run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir-bench; fi
bin=$(realpath "${BIN:-target/release}")
pg_admin=${WEIR_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
rounds=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fresh_pg() {
  local name="weir_bench_assets_$$_$1"
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null
  echo "${pg_admin%/*}/$name"
}

for what in latency latency-apart pass; do
  for i in $(seq "$rounds"); do
    if [ "$what" != latency-apart ]; then "$bin/assets" "$what" "sqlite://$tmp/$what-$i.db"; fi
    "$bin/assets" "$what" "$(fresh_pg "${what//-/_}$i")"
  done
done
