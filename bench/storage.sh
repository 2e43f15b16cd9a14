#!/usr/bin/env bash
# Storage benchmarks (issue #16), each side by side with its baseline in the same script, on a
# local S3 server (moto, from the venv scripts/test makes) and the local Postgres:
#   a. ROWS (default 1,000,000) rows as Parquet in S3 loaded into Postgres by `weir tasks test`,
#      next to `psql \copy` of the same rows as CSV from local disk (target: >= 0.9x \copy's
#      speed, peak RSS under 80 MB);
#   b. the same rows exported from Postgres to Parquet in S3 by weir, next to DuckDB writing
#      them from the CSV file to a local Parquet file (the ratio is reported);
#   c. a SIZE_MB (default 2048) MB file transferred from local disk to S3 by weir (verified),
#      next to boto3's multipart upload of it with the same part size and concurrency
#      (target: >= 0.9x).
# ROUNDS (default 3) rounds of each; medians. PARTS=a,b,c picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release -q -p weir; fi
weir=$(realpath "${BIN:-target/release}")/weir
venv=$(realpath target/test-tools/venv)
[ -x "$venv/bin/moto_server" ] || { echo "run scripts/test once: it installs moto, pyarrow, duckdb and boto3 into $venv"; exit 1; }
rows=${ROWS:-1000000}
rounds=${ROUNDS:-3}
size_mb=${SIZE_MB:-2048}
parts=${PARTS:-a,b,c}
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$tmp/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port" && break; sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$port/bench" > /dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
db=weir_bench_storage
admin="postgresql://postgres@localhost/postgres?host=/var/run/postgresql"
pg="postgresql://postgres@localhost/$db?host=/var/run/postgresql"
psql -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" > /dev/null
mkdir -p "$tmp/dags"
cat > "$tmp/weir.toml" <<TOML
[connections.wh]
url = "$pg"
[connections.lake]
url = "s3://bench"
endpoint = "http://127.0.0.1:$port"
region = "us-east-1"
access_key_id = "bench"
secret_access_key = "bench-secret"
TOML
cat > "$tmp/dags/bench.yaml" <<'YAML'
id: bench
tasks:
  load:
    kind: load
    source: {file: "s3://bench/big.parquet"}
    target: {conn: wh, table: big}
    columns:
      id: {type: bigint, not_null: true}
      name: {type: text}
      amount: {type: numeric}
      day: {type: date}
      active: {type: bool}
      created_at: {type: timestamptz}
    mode: truncate_insert
    rejects: {on_error: reject}
  export:
    kind: export
    conn: wh
    table: big
    to: "s3://bench/out/big.parquet"
  transfer:
    kind: transfer
    from: big.bin
    to: "s3://bench/transfer/"
YAML
cd "$tmp"
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
now() { date +%s.%N; }
run_weir() { # task -> "seconds rss_kb"
  /usr/bin/time -o weir.time -f "%e %M" "$weir" tasks test bench "$1" > weir.out 2>&1 || { cat weir.out; exit 1; }
  cat weir.time
}

if [[ $parts == *a* || $parts == *b* ]]; then
  "$venv/bin/python" - "$rows" <<'PY'
import sys, datetime, decimal
import pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq
n = int(sys.argv[1])
with open("big.csv", "w") as f:
    f.write("id,name,amount,day,active,created_at\n")
    for i in range(n):
        a = (i * 7919) % 10_000_000
        f.write(f"{i},customer {i},{a // 100}.{a % 100:02d},2024-{1 + i % 12:02d}-{1 + i % 28:02d},"
                f"{'true' if i % 3 else 'false'},2024-01-01T{i % 24:02d}:{i % 60:02d}:00Z\n")
t = pc.read_csv("big.csv", convert_options=pc.ConvertOptions(column_types={
    "id": pa.int64(), "name": pa.string(), "amount": pa.decimal128(12, 2), "day": pa.date32(),
    "active": pa.bool_(), "created_at": pa.timestamp("us", tz="UTC")}))
pq.write_table(t, "big.parquet", row_group_size=100_000)
PY
  curl -s -T big.parquet "http://127.0.0.1:$port/bench/big.parquet" > /dev/null
  psql -q "$pg" -c "CREATE TABLE big (id bigint primary key, name text, amount numeric, day date, active boolean, created_at timestamptz)"
  echo "$rows rows: CSV $(du -h big.csv | cut -f1), Parquet $(du -h big.parquet | cut -f1); $rounds rounds"
fi

if [[ $parts == *a* ]]; then
  : > copy.times; : > weir.times; : > weir.rss
  for round in $(seq "$rounds"); do
    psql -q "$pg" -c "TRUNCATE big"
    start=$(now); psql -q "$pg" -c "\\copy big FROM 'big.csv' WITH (FORMAT csv, HEADER true)"; end=$(now)
    echo "$end - $start" | bc >> copy.times
    psql -q "$pg" -c "TRUNCATE big"
    read -r secs rss < <(run_weir load)
    loaded=$(psql -tA "$pg" -c "SELECT count(*) FROM big")
    [ "$loaded" = "$rows" ] || { echo "weir loaded $loaded rows, not $rows"; cat weir.out; exit 1; }
    echo "$secs" >> weir.times; echo "$rss" >> weir.rss
    echo "  a. round $round: psql \\copy (CSV, local) $(tail -1 copy.times) s; weir (Parquet, S3) $secs s, $((rss / 1024)) MB peak RSS"
  done
  c=$(median < copy.times); w=$(median < weir.times); m=$(median < weir.rss)
  echo "a. Parquet in S3 -> Postgres, medians: psql \\copy ${c} s; weir ${w} s ($(echo "scale=2; $c / $w" | bc)x \\copy's speed), peak RSS $((m / 1024)) MB"
fi

if [[ $parts == *b* ]]; then
  psql -q "$pg" -c "TRUNCATE big" -c "\\copy big FROM 'big.csv' WITH (FORMAT csv, HEADER true)"
  : > duck.times; : > weir.times
  for round in $(seq "$rounds"); do
    secs=$("$venv/bin/python" -c '
import time, duckdb
start = time.monotonic()
duckdb.sql("COPY (SELECT * FROM read_csv(\"big.csv\")) TO \"duck.parquet\" (FORMAT parquet)")
print(round(time.monotonic() - start, 3))')
    echo "$secs" >> duck.times
    read -r wsecs rss < <(run_weir export)
    grep -q "\"rows\":$rows" weir.out || { echo "weir exported another count of rows"; cat weir.out; exit 1; }
    echo "$wsecs" >> weir.times
    echo "  b. round $round: DuckDB (CSV -> local Parquet) $secs s; weir (Postgres -> Parquet in S3) $wsecs s, $((rss / 1024)) MB peak RSS"
  done
  d=$(median < duck.times); w=$(median < weir.times)
  echo "b. export of $rows rows to Parquet, medians: DuckDB ${d} s; weir ${w} s (weir takes $(echo "scale=2; $w / $d" | bc)x DuckDB's time)"
fi

if [[ $parts == *c* ]]; then
  head -c "$((size_mb * 1024 * 1024))" /dev/urandom > big.bin
  : > boto.times; : > weir.times; : > weir.rss
  for round in $(seq "$rounds"); do
    secs=$("$venv/bin/python" - "$port" <<'PY'
import sys, time, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
config = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=4)
start = time.monotonic()
s3.upload_file("big.bin", "bench", "boto/big.bin", Config=config)
print(round(time.monotonic() - start, 3))
s3.delete_object(Bucket="bench", Key="boto/big.bin")
PY
)
    echo "$secs" >> boto.times
    curl -s -X DELETE "http://127.0.0.1:$port/bench/transfer/big.bin" > /dev/null
    read -r wsecs rss < <(run_weir transfer)
    grep -q '"copied":1' weir.out || { echo "weir copied nothing"; cat weir.out; exit 1; }
    echo "$wsecs" >> weir.times; echo "$rss" >> weir.rss
    how=$(grep -o 'verified by [a-z ]*' weir.out | head -1)
    echo "  c. round $round: boto3 multipart upload $secs s; weir transfer ($how) $wsecs s, $((rss / 1024)) MB peak RSS"
  done
  b=$(median < boto.times); w=$(median < weir.times); m=$(median < weir.rss)
  echo "c. ${size_mb} MB local -> S3, medians: boto3 ${b} s; weir ${w} s ($(echo "scale=2; $b / $w" | bc)x boto3's speed), peak RSS $((m / 1024)) MB"
fi
psql -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
