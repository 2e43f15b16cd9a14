#!/usr/bin/env bash
# Flat under history (issue #19, item 5): the engine's benchmarks (bench/src/bin/engine.rs:
# chain100, fanout1000, fanout-noop1000) and the history DAG's web pages on a database that
# already holds HISTORY finished task
# instances (default 10,000,000: 1 run in 10 tasks, one DAG, 1 run in 50 failed), next to the
# same benchmarks on an empty database, alternating, ROUNDS times (default 2), on SQLite and on
# Postgres (the local server over its Unix socket; PGURL for another). The history is generated
# in bulk by SQL (bench/lib/history.sh); filling takes minutes and gigabytes (about 4 GB on
# Postgres): the filled databases are kept between calls and copied. bench/retention.sh
# deletes such a history.
set -euo pipefail
cd "$(dirname "$0")/.."
# BIN: a folder holding `weir` and `engine` built elsewhere (bench/compare.sh); else built here.
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir-bench -p weir; fi
bin=$(realpath "${BIN:-target/release}")
history=${HISTORY:-10000000}
rounds=${ROUNDS:-2}
benches=${BENCHES:-web chain fanout fanout-noop}
. bench/lib/history.sh
. bench/lib/web.sh
history_dag "$tmp/dags"

fresh_pg() {
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  pg_url "$1"
}

keep_history "$history" "$tmp/dags"
pg_full=$(copy_history_pg "$history" weir_bench_history)
sqlite_full=$(copy_history_sqlite "$history" "$tmp/history.db")
sqlite_full=${sqlite_full#sqlite://}

# The history DAG's pages (its grid of the last 100 runs, the runs tab, the DAG list) served by
# `weir web` from the filled database and from one holding only its last 1,000 runs: the same
# pages, the same rows shown. CONNECTIONS (8) connections for DURATION (10) s a page.
web_pages() { # $1: the side's label, $2: its database URL
  local port=18090 token
  echo "bench-password" | WEIR_DATABASE_URL=$2 "$bin/weir" users create bench --role viewer --password-stdin >/dev/null
  token=$(WEIR_DATABASE_URL=$2 "$bin/weir" users token bench 2>/dev/null)
  RUST_LOG=weir::access=info WEIR_DATABASE_URL=$2 WEIR_DAGS_FOLDER=$tmp/dags WEIR_WEB_BIND=127.0.0.1:$port \
    "$bin/weir" web 2>"$tmp/access.log" &
  server=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
  for page in "/dags/history?runs=100" /dags/history /api/v1/dags/history/grid "/dags/history?tab=runs" / /api/v1/dags; do
    echo "[$1] $page"
    bench_page "http://127.0.0.1:$port" "$page" "$token" "$tmp/access.log" "${CONNECTIONS:-8}" "${DURATION:-10}"
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=
}
if [[ " $benches " == *" web "* ]]; then
  small=$(fresh_pg weir_bench_history_small)
  store_dags "$small" "$tmp/dags"
  fill_history_pg "$small" 1000
  sqlite_small=$tmp/small.db
  store_dags "sqlite://$sqlite_small" "$tmp/dags"
  fill_history_sqlite "$sqlite_small" 1000
  web_pages "sqlite, 10,000 finished" "sqlite://$sqlite_small"
  web_pages "sqlite, $history finished" "sqlite://$sqlite_full"
  web_pages "postgres, 10,000 finished" "$small"
  web_pages "postgres, $history finished" "$pg_full"
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS weir_bench_history_small WITH (FORCE)" >/dev/null
fi

# The engine adds its own DAGs and runs to the filled database round after round (a few
# thousand rows against millions); the empty side gets a fresh database each time.
for bench in ${benches//web/}; do
  for i in $(seq "$rounds"); do
    "$bin/engine" "$bench" "sqlite://$tmp/empty-$bench-$i.db" 2>&1 | sed 's/\[sqlite\]/[sqlite, empty]/'
    "$bin/engine" "$bench" "sqlite://$sqlite_full" 2>&1 | sed "s/\[sqlite\]/[sqlite, $history finished]/"
    "$bin/engine" "$bench" "$(fresh_pg "weir_bench_history_empty")" 2>&1 | sed 's/\[postgres\]/[postgres, empty]/'
    "$bin/engine" "$bench" "$pg_full" 2>&1 | sed "s/\[postgres\]/[postgres, $history finished]/"
  done
done
psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS weir_bench_history_empty WITH (FORCE)" \
  -c "DROP DATABASE IF EXISTS weir_bench_history WITH (FORCE)" >/dev/null
