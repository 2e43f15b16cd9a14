#!/usr/bin/env bash
# Load benchmark (issue: data steps): ROWS (default 400,000) generated CSV rows of
# (bigint, text, numeric, date) loaded by `weir tasks test` with mode replace into Postgres
# (Unix socket: COPY), SQLite and MariaDB, with wall time and the process's peak RSS (flat
# whatever the file size: the load streams).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weir
rows=${ROWS:-400000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dags"
python3 - "$tmp/big.csv" "$rows" <<'PY'
import random, sys
r = random.Random(1)
with open(sys.argv[1], "w") as f:
    f.write("id,name,amount,day\n")
    for i in range(int(sys.argv[2])):
        f.write(f"{i},name {i},{r.randint(0, 100000) / 100},2024-01-{1 + i % 28:02d}\n")
PY
cat > "$tmp/dags/big.yaml" <<'YAML'
id: big
tasks:
  load:
    kind: load
    source: {file: big.csv, format: csv}
    target: {conn: wh, table: big}
    columns:
      id: {type: bigint, not_null: true}
      name: {type: text}
      amount: {type: numeric}
      day: {type: date}
    mode: replace
YAML
weir="$PWD/target/release/weir"
cd "$tmp"
echo "$rows rows, $(du -h big.csv | cut -f1):"
psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS weir_bench_load WITH (FORCE)" -c "CREATE DATABASE weir_bench_load" >/dev/null
mysql -uroot -h127.0.0.1 -e "drop database if exists weir_bench_load; create database weir_bench_load"
for target in "postgres postgres://postgres@localhost/weir_bench_load?host=/var/run/postgresql" \
              "sqlite sqlite://$tmp/wh.db" \
              "mariadb mysql://root@127.0.0.1:3306/weir_bench_load"; do
  set -- $target
  /usr/bin/time -f "  $1: %e s wall, %M KB peak RSS" env WEIR_CONN_WH="$2" "$weir" tasks test big load 2>&1 | grep wall
done
