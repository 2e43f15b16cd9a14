#!/usr/bin/env bash
# Before and after, side by side: builds BASE (a commit; default the last one before the
# structural step of issue #15) in a git worktree, builds the working tree, then runs the
# engine, load and web benchmarks with each build in turn, ROUNDS times (default 3), so that
# every pair of figures shares the machine's load of the moment. Prints each run's own lines,
# prefixed with `base` or `head`.
#   bench/compare.sh [BASE]          SCRIPTS="engine load web" by default
# The benchmarks' own settings pass through (ROWS for load, DURATION for web, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-9b27a46^}
scripts=${SCRIPTS:-engine load web}
rounds=${ROUNDS:-3}
# BASE_WORKTREE, BASE_TARGET: where the base is checked out and built (kept between runs).
# The default worktree sits inside this checkout, so cargo reads this checkout's
# .cargo/config.toml for the base too (its build settings, e.g. SQLite's compile flags): to
# measure a change of that file, set BASE_WORKTREE to a folder outside it.
worktree=${BASE_WORKTREE:-target/compare/base}
base_target=${BASE_TARGET:-$PWD/target/compare/base-target}
if [ ! -d "$worktree" ]; then
  git worktree add -f --detach "$worktree" "$base" >/dev/null
fi
git -C "$worktree" checkout -q --detach "$base"
echo "base: $(git -C "$worktree" log --oneline -1)"
echo "head: $(git log --oneline -1)$(git diff --quiet || echo ' (with uncommitted changes)')"
# BASE_BIN: a folder holding the base's `weir` and benchmark binaries built earlier (the
# base's build is then skipped).
if [ -z "${BASE_BIN:-}" ]; then
  CARGO_TARGET_DIR=$base_target \
    cargo build --release -q -p weir -p weir-bench --manifest-path "$worktree/Cargo.toml"
fi
cargo build --release -q -p weir -p weir-bench
base_bin=${BASE_BIN:-$base_target/release}
head_bin=$PWD/target/release

for script in $scripts; do
  echo "== $script"
  for i in $(seq "$rounds"); do
    for side in base head; do
      bin=${side}_bin
      # One round per call: the two builds alternate.
      BIN=${!bin} ROUNDS=1 bash "bench/$script.sh" 2>&1 | sed "s/^/$side $i: /"
    done
  done
done
