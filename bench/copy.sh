#!/usr/bin/env bash
# Database-to-database copy benchmark (issue: real pipelines, item 2). A MariaDB table of ROWS
# (default 1,000,000) rows — bigint, varchar, decimal(12,2), datetime(6), and text holding
# NULLs, empty strings, tabs, newlines, backslashes and emoji — copied into Postgres, side by
# side in each of ROUNDS (default 5) rounds:
#   baseline: `SELECT * INTO OUTFILE` on the MariaDB server, then `psql \copy` of that file;
#   weir:     `weir tasks test` of a `load` from the MariaDB table into the same empty table.
# Then the reconciliation of the copy (`validate` with compare_count and compare_checksum),
# each round after weir's copy. Reports medians, weir ÷ baseline, and weir's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weir
rows=${ROWS:-1000000}
rounds=${ROUNDS:-5}
tmp=$(mktemp -d)
chmod 777 "$tmp" # the MariaDB server writes the baseline's file here
trap 'rm -rf "$tmp"' EXIT
db=weir_bench_copy
my() { mariadb --default-character-set=utf8mb4 -h 127.0.0.1 -u root "$@"; }
pg="postgresql://postgres@localhost/$db?host=/var/run/postgresql"
mysql_url="mysql://root@127.0.0.1:3306/$db"

my -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db CHARACTER SET utf8mb4"
my "$db" -e "CREATE TABLE src (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, amount DECIMAL(12,2), created DATETIME(6), note TEXT) DEFAULT CHARSET=utf8mb4"
python3 - "$rows" > "$tmp/src.sql" <<'PY'
import random, sys
n = int(sys.argv[1])
r = random.Random(7)
notes = ["plain", "", None, "tab\there", "two\nlines", "back\\slash", "emoji 🚀 ünïcödé", "quote ' and \" both", "\\N is not null"]
def q(s):
    if s is None:
        return "NULL"
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t") + "'"
batch = []
for i in range(n):
    cents = r.randint(-10_000_000, 10_000_000)
    amount = "NULL" if i % 97 == 0 else f"{cents // 100}.{abs(cents) % 100:02d}" if cents >= 0 else f"-{abs(cents) // 100}.{abs(cents) % 100:02d}"
    created = f"'2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{(i * 7919) % 1_000_000:06d}'"
    batch.append(f"({i},{q(f'customer {i}')},{amount},{created},{q(notes[i % len(notes)])})")
    if len(batch) == 2000:
        print("INSERT INTO src VALUES " + ",".join(batch) + ";")
        batch = []
if batch:
    print("INSERT INTO src VALUES " + ",".join(batch) + ";")
PY
my "$db" < "$tmp/src.sql" 2>&1 | cut -c1-300
psql -q "postgresql://postgres@localhost/postgres?host=/var/run/postgresql" \
  -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
psql -q "$pg" -c "CREATE TABLE dst (id bigint primary key, name varchar(100) not null, amount numeric(12,2), created timestamp(6), note text)"

mkdir -p "$tmp/dags"
cat > "$tmp/dags/copy.yaml" <<YAML
id: copy
tasks:
  load:
    kind: load
    source: {conn: src, table: src}
    target: {conn: wh, table: dst, create: never}
    mode: append
  check:
    kind: validate
    checks:
      - compare_count:
          source: {conn: src, table: src}
          target: {conn: wh, table: dst}
      - compare_checksum:
          source: {conn: src, table: src}
          target: {conn: wh, table: dst}
          key: [id]
YAML
weir="$PWD/target/release/weir"
cd "$tmp"
echo "$rows rows, $rounds rounds"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
now() { date +%s.%N; }
: > base.times; : > weir.times; : > weir.rss; : > check.times; : > check.rss
for round in $(seq "$rounds"); do
  psql -q "$pg" -c "TRUNCATE dst"
  rm -f "$tmp/out.tsv"
  start=$(now)
  my "$db" -e "SELECT * FROM src INTO OUTFILE '$tmp/out.tsv'"
  psql -q "$pg" -c "\\copy dst FROM '$tmp/out.tsv'"
  end=$(now)
  echo "$end - $start" | bc >> base.times
  psql -q "$pg" -c "TRUNCATE dst"
  /usr/bin/time -o weir.time -f "%e %M" env WEIR_CONN_SRC="$mysql_url" WEIR_CONN_WH="$pg" \
    "$weir" tasks test copy load > weir.out 2>&1 || { cat weir.out; exit 1; }
  read -r secs kb < weir.time
  echo "$secs" >> weir.times
  echo "$((kb / 1024))" >> weir.rss
  copied=$(psql -tA "$pg" -c "SELECT count(*) FROM dst")
  [ "$copied" = "$rows" ] || { echo "weir copied $copied of $rows rows"; cat weir.out; exit 1; }
  /usr/bin/time -o check.time -f "%e %M" env WEIR_CONN_SRC="$mysql_url" WEIR_CONN_WH="$pg" \
    "$weir" tasks test copy check > check.out 2>&1 || { cat check.out; exit 1; }
  read -r secs kb < check.time
  echo "$secs" >> check.times
  echo "$((kb / 1024))" >> check.rss
  echo "round $round: baseline $(tail -1 base.times)s, weir $(tail -1 weir.times)s ($(tail -1 weir.rss) MB), reconcile $(tail -1 check.times)s ($(tail -1 check.rss) MB)"
done
base=$(median < base.times)
copy=$(median < weir.times)
check=$(median < check.times)
echo "median: baseline (INTO OUTFILE + psql \\copy) ${base}s; weir ${copy}s; weir ÷ baseline $(echo "scale=2; $copy / $base" | bc)"
echo "weir peak RSS: $(sort -n weir.rss | tail -1) MB; reconciliation ${check}s ($(echo "scale=2; $check / $copy" | bc)x the copy), peak RSS $(sort -n check.rss | tail -1) MB"
grep -h "check " check.out | sed 's/^/  /'
psql -q "postgresql://postgres@localhost/postgres?host=/var/run/postgresql" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
my -e "DROP DATABASE $db"
