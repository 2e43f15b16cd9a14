#!/usr/bin/env bash
# Load benchmark (issue: data steps). ROWS (default 1,000,000) generated CSV rows of six typed
# columns (bigint, text, numeric, date, bool, timestamptz):
#   1. Postgres, side by side in each of ROUNDS rounds: `psql -c "\copy ..."` of the file into
#      an empty typed table, then `weir tasks test` loading the same file into the same empty
#      table (`truncate_insert`, typed `columns`, `rejects` on: every row parsed and checked);
#   2. an upsert by `id` of a second file where 1% of the rows changed (counts checked);
#   3. with ALL=1, the same load into SQLite and MariaDB.
# Each weir run reports wall time and peak RSS (/usr/bin/time); medians over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
# BIN: a folder holding a `weir` built elsewhere (bench/compare.sh); else built here.
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir; fi
rows=${ROWS:-1000000}
rounds=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dags"
python3 - "$tmp" "$rows" <<'PY'
import random, sys
tmp, n = sys.argv[1], int(sys.argv[2])
r = random.Random(1)
amounts = [r.randint(0, 10_000_000) for _ in range(n)]
def write(path, changed):
    with open(path, "w") as f:
        f.write("id,name,amount,day,active,created_at\n")
        for i in range(n):
            a = amounts[i] + (1 if i in changed else 0)
            f.write(f"{i},customer {i},{a // 100}.{a % 100:02d},2024-{1 + i % 12:02d}-{1 + i % 28:02d},"
                    f"{'true' if i % 3 else 'false'},2024-01-01T{i % 24:02d}:{i % 60:02d}:00Z\n")
write(f"{tmp}/big.csv", set())
# 1% of the rows changed, spread over the file.
write(f"{tmp}/changed.csv", set(range(0, n, 100)))
PY
columns='    columns:
      id: {type: bigint, not_null: true}
      name: {type: text}
      amount: {type: numeric}
      day: {type: date}
      active: {type: bool}
      created_at: {type: timestamptz}'
cat > "$tmp/dags/big.yaml" <<YAML
id: big
tasks:
  load:
    kind: load
    source: {file: big.csv, format: csv}
    target: {conn: wh, table: big}
$columns
    mode: truncate_insert
    rejects: {on_error: reject}
  upsert:
    kind: load
    source: {file: changed.csv, format: csv}
    target: {conn: wh, table: big}
$columns
    mode: upsert
    key: [id]
    rejects: {on_error: reject}
YAML
weir=$(realpath "${BIN:-target/release}")/weir
cd "$tmp"
db=weir_bench_load
pg="postgresql://postgres@localhost/$db?host=/var/run/postgresql"
psql -q "postgresql://postgres@localhost/postgres?host=/var/run/postgresql" \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
psql -q "$pg" -c "CREATE TABLE big (id bigint primary key, name text, amount numeric, day date, active boolean, created_at timestamptz)"
echo "$rows rows, $(du -h big.csv | cut -f1), $rounds rounds"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
now() { date +%s.%N; }
: > psql.times; : > weir.times; : > weir.rss
for round in $(seq "$rounds"); do
  psql -q "$pg" -c "TRUNCATE big"
  start=$(now)
  psql -q "$pg" -c "\\copy big FROM 'big.csv' WITH (FORMAT csv, HEADER true)"
  end=$(now)
  echo "$end - $start" | bc >> psql.times
  psql -q "$pg" -c "TRUNCATE big"
  /usr/bin/time -o weir.time -f "%e %M" env WEIR_CONN_WH="$pg" "$weir" tasks test big load > weir.out 2>&1 \
    || { cat weir.out; exit 1; }
  read -r secs rss < weir.time
  echo "$secs" >> weir.times; echo "$rss" >> weir.rss
  loaded=$(psql -tA "$pg" -c "SELECT count(*) FROM big")
  [ "$loaded" = "$rows" ] || { echo "weir loaded $loaded rows, not $rows"; cat weir.out; exit 1; }
  echo "  round $round: psql \\copy $(tail -1 psql.times) s, weir $secs s ($rss KB peak RSS)"
done
p=$(median < psql.times); w=$(median < weir.times); m=$(median < weir.rss)
echo "Postgres load, medians: psql \\copy ${p} s ($(echo "$rows / $p" | bc) rows/s); weir ${w} s ($(echo "$rows / $w" | bc) rows/s, $(echo "scale=2; $p / $w" | bc)x psql), peak RSS $((m / 1024)) MB"

/usr/bin/time -o weir.time -f "%e %M" env WEIR_CONN_WH="$pg" "$weir" tasks test big upsert > weir.out 2>&1 \
  || { cat weir.out; exit 1; }
read -r secs rss < weir.time
counts=$(grep -o '"rows_[a-z]*": *[0-9]*' weir.out | tr -d '" ' | tr '\n' ' ')
echo "Postgres upsert of $rows rows, 1% changed: $secs s, $((rss / 1024)) MB peak RSS; $counts"
expected=$(( (rows + 99) / 100 ))
case " $counts " in
  *" rows_updated:$expected "*) ;;
  *) echo "expected rows_updated:$expected"; cat weir.out; exit 1 ;;
esac

if [ "${ALL:-0}" = 1 ]; then
  mysql -uroot -h127.0.0.1 -e "drop database if exists $db; create database $db"
  for target in "sqlite sqlite://$tmp/wh.db" "mariadb mysql://root@127.0.0.1:3306/$db"; do
    set -- $target
    /usr/bin/time -o weir.time -f "%e %M" env WEIR_CONN_WH="$2" "$weir" tasks test big load > weir.out 2>&1 \
      || { cat weir.out; exit 1; }
    read -r secs rss < weir.time
    echo "$1 load: $secs s, $((rss / 1024)) MB peak RSS"
  done
  mysql -uroot -h127.0.0.1 -e "drop database if exists $db"
fi
psql -q "postgresql://postgres@localhost/postgres?host=/var/run/postgresql" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
