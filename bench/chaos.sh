#!/usr/bin/env bash
# Chaos trials against release binaries on a private Postgres cluster: per trial, a 40-task
# fan-out (2 s tasks that write `start`/`end` lines to a ledger) served by `weir scheduler`
# and two `weir worker --concurrency 4`, and one fault in the middle of it. Prints, per trial:
# whether the run finished, tasks lost (never completed), executions repeated, pairs of
# executions of one task that overlapped in time, and the time from the fault to the run's
# end. Trials: kill-worker (SIGKILL), term-worker (SIGTERM), stop-worker (SIGSTOP past the
# lease), kill-scheduler, restart-db-fast, restart-db-immediate. Figures: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weir
weir=$PWD/target/release/weir
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
tmp=$(mktemp -d)
chmod 777 "$tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid postgres --regid postgres --clear-groups -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  as_pg "$bin/pg_ctl" -D "$tmp/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
as_pg "$bin/initdb" -U postgres --auth=trust -E UTF8 --no-sync -D "$tmp/pg" >/dev/null
pg_ctl() { as_pg "$bin/pg_ctl" -D "$tmp/pg" -w -l "$tmp/pg.log" -o "-p $port -k $tmp -c listen_addresses=127.0.0.1 -c fsync=off" "$@" >/dev/null; }
pg_ctl start
admin="postgres://postgres@127.0.0.1:$port/postgres"

trial() {
  local name=$1
  local dir=$tmp/$name
  mkdir -p "$dir/dags"
  psql -q "$admin" -c "CREATE DATABASE $name" >/dev/null
  cat > "$dir/weir.toml" <<TOML
database_url = "postgres://postgres@127.0.0.1:$port/$name"
dags_folder = "dags"
[scheduler]
heartbeat_timeout = "6s"
TOML
  {
    echo "id: fan"
    echo "tasks:"
    for i in $(seq -w 1 40); do
      echo "  t$i:"
      echo "    kind: shell"
      echo "    run: |"
      echo "      echo \"start \$WEIR_TASK_ID \$(date +%s.%N)\" >> $dir/ledger"
      echo "      sleep 2"
      echo "      echo \"end \$WEIR_TASK_ID \$(date +%s.%N)\" >> $dir/ledger"
    done
  } > "$dir/dags/fan.yaml"
  cd "$dir"
  "$weir" db migrate >/dev/null
  "$weir" scheduler 2>"$dir/scheduler.log" & local sched=$!
  "$weir" worker --concurrency 4 2>"$dir/worker1.log" & local w1=$!
  "$weir" worker --concurrency 4 2>"$dir/worker2.log" & local w2=$!
  pids+=("$sched" "$w1" "$w2")
  sleep 1
  local run
  run=$("$weir" trigger fan --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  until [ "$(grep -c '^start' "$dir/ledger" 2>/dev/null || echo 0)" -ge 12 ]; do sleep 0.1; done
  local fault_at
  fault_at=$(date +%s.%N)
  case $name in
    kill_worker) kill -9 "$w1"; "$weir" worker --concurrency 4 2>"$dir/worker3.log" & pids+=($!) ;;
    term_worker) kill -TERM "$w1"; "$weir" worker --concurrency 4 2>"$dir/worker3.log" & pids+=($!) ;;
    stop_worker) kill -STOP "$w1"; (sleep 12; kill -CONT "$w1") & ;;
    kill_scheduler) kill -9 "$sched"; sleep 1; "$weir" scheduler 2>"$dir/scheduler2.log" & pids+=($!) ;;
    restart_db_fast) pg_ctl -m fast restart ;;
    restart_db_immediate) pg_ctl -m immediate restart ;;
  esac
  local state=unfinished deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    state=$("$weir" runs show "$run" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo unknown)
    case $state in success|failed) break ;; esac
    sleep 0.2
  done
  local ended_at
  ended_at=$(date +%s.%N)
  python3 - "$dir/ledger" "$name" "$state" "$fault_at" "$ended_at" <<'PY'
import sys, collections
ledger, name, state, fault, ended = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
starts, ends = collections.defaultdict(list), collections.defaultdict(list)
for line in open(ledger):
    kind, task, at = line.split()
    (starts if kind == "start" else ends)[task].append(float(at))
tasks = [f"t{i:02d}" for i in range(1, 41)]
lost = sum(1 for t in tasks if not ends[t])
repeated = sum(max(0, len(starts[t]) - 1) for t in tasks)
overlapping = 0
for t in tasks:
    spans = []
    ordered = sorted(starts[t])
    for i, s in enumerate(ordered):
        # An execution's `end` comes after its start and before the next execution's start.
        until = ordered[i + 1] if i + 1 < len(ordered) else float("inf")
        e = min([x for x in ends[t] if s <= x < until], default=None)
        if e is None:
            # No `end`: killed. A try running at the fault died with it at the latest when
            # the fault was a kill; otherwise allow it its whole 2 s.
            e = min(s + 2.0, fault) if name == "kill_worker" and s < fault else s + 2.0
        spans.append((s, e))
    for i in range(len(spans)):
        for j in range(i + 1, len(spans)):
            if spans[j][0] < spans[i][1] and spans[i][0] < spans[j][1]:
                overlapping += 1
print(f"{name:22} run {state:10} lost {lost:2}  repeated {repeated:2}  overlapping {overlapping:2}  fault to end {ended - fault:5.1f} s")
PY
  for p in "$sched" "$w1" "$w2"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$weir worker" 2>/dev/null || true
  pkill -9 -f "$weir scheduler" 2>/dev/null || true
  cd - >/dev/null
}

for t in ${TRIALS:-kill_worker term_worker stop_worker kill_scheduler restart_db_fast restart_db_immediate}; do
  trial "$t"
done
