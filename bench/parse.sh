#!/usr/bin/env bash
# Parse benchmark (issue: foundation): 1,000 DAG files x 50 tasks, parsed and validated.
# 1. in memory, median of 10 rounds (the model alone);
# 2. `weir dags validate DIR` end to end (reading files, printing), with hyperfine when present.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weir-bench -p weir
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./target/release/parse_dags --write "$dir"
if command -v hyperfine >/dev/null; then
  hyperfine --warmup 2 --runs 15 --style basic "./target/release/weir dags validate $dir"
else
  echo "hyperfine not installed (apt-get install hyperfine); timing one run:"
  time ./target/release/weir dags validate "$dir" >/dev/null
fi
