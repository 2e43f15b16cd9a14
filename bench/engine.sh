#!/usr/bin/env bash
# Engine benchmarks (issue: engine), on SQLite and on Postgres, side by side:
#  chain100: 100 chained `true` shell tasks, trigger to success and the end→start gap;
#  fanout1000: 1,000 independent `true` tasks as a user gets them by default (the DAG's
#    max_active_tasks 16, a worker's concurrency 8), next to `xargs -P8` and `-P16`;
#  fanout-wide1000: the same DAG with max_active_tasks 10000 and concurrency 16;
#  fanout-noop1000: the default fan-out with `noop` tasks (no process): the engine's own cost;
#  idle RSS of `weir standalone` on the example DAGs.
# Postgres: WEIR_BENCH_POSTGRES_URL (default the local server over TCP, TLS as the server
# offers it), and also through the server's Unix socket (WEIR_BENCH_POSTGRES_SOCKET, default
# /var/run/postgresql) when it exists; a fresh database per run. Why both: docs/benchmarks.md
# (sqlx 0.9.0 leaves Nagle's algorithm on, which stalls some TLS statements on delayed ACKs).
set -euo pipefail
cd "$(dirname "$0")/.."
# BIN: a folder holding `weir` and `engine` built elsewhere (bench/compare.sh); else built here.
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir-bench -p weir; fi
bin=$(realpath "${BIN:-target/release}")
pg_admin=${WEIR_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
pg_socket=${WEIR_BENCH_POSTGRES_SOCKET:-/var/run/postgresql}
rounds=${ROUNDS:-3}
tmp=$(mktemp -d)
burner=
trap '[ -z "$burner" ] || kill "$burner" 2>/dev/null || true; rm -rf "$tmp"' EXIT
# BURN=N: N CPU burners (`stress-ng --cpu N`, from Debian) run beside every figure, the
# baselines included: the engine's cost on a machine whose cores are busy with other work.
if [ -n "${BURN:-}" ]; then
  command -v stress-ng >/dev/null || { echo "stress-ng is missing: apt-get install stress-ng" >&2; exit 1; }
  stress-ng --cpu "$BURN" --quiet &
  burner=$!
  echo "with stress-ng --cpu $BURN beside"
fi

fresh_pg() {
  local name="weir_bench_$$_${1//-/_}"
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null
  echo "${pg_admin%/*}/$name"
}

for bench in ${BENCHES:-chain fanout fanout-wide fanout-noop}; do
  for i in $(seq "$rounds"); do
    if [ "$bench" = fanout ]; then
      # The baseline next to each round: the machine's load drifts between rounds.
      /usr/bin/time -f "xargs1000 -P8 (bash -c true): %e s, cpu %U user %S sys" bash -c 'seq 1000 | xargs -P8 -I{} bash -c true'
      /usr/bin/time -f "xargs1000 -P16 (bash -c true): %e s, cpu %U user %S sys" bash -c 'seq 1000 | xargs -P16 -I{} bash -c true'
    fi
    # CPU: the whole process with its children (the tasks' processes included).
    cpu=(/usr/bin/time -f "  cpu %U user %S sys")
    "${cpu[@]}" "$bin/engine" "$bench" "sqlite://$tmp/$bench-$i.db" 2>&1
    "${cpu[@]}" "$bin/engine" "$bench" "$(fresh_pg "$bench$i")" 2>&1 | sed 's/\[postgres\]/[postgres tcp]/'
    if [ -S "$pg_socket/.s.PGSQL.5432" ]; then
      name=$(basename "$(fresh_pg "${bench}s$i")")
      "${cpu[@]}" "$bin/engine" "$bench" "postgres://postgres@localhost/$name?host=$pg_socket" 2>&1 | sed 's/\[postgres\]/[postgres socket]/'
    fi
  done
done

echo "idle RSS of weir standalone (example DAGs, SQLite), after 5 s:"
mkdir -p "$tmp/standalone"
cp -r dags weir.toml "$tmp/standalone/"
(cd "$tmp/standalone" && exec "$bin/weir" standalone >/dev/null 2>&1) &
pid=$!
sleep 5
grep VmRSS "/proc/$pid/status" | sed 's/^/  /'
kill -TERM "$pid"; wait "$pid" || true
