#!/usr/bin/env bash
# Chaos trials against release binaries on a private Postgres cluster: per trial, a 40-task
# fan-out (2 s tasks that write `start`, `tick` every 0.2 s and `end` lines with their try
# number to a ledger) served by `weir scheduler` and two `weir worker --concurrency 4`, and one
# fault in the middle of it. Prints, per trial: whether the run finished, tasks lost (never
# completed), executions repeated, pairs of executions of one task that overlapped in time
# (an execution lasts from its `start` to its last line), and the time from the fault to the
# run's end. Trials: kill_worker (SIGKILL), term_worker (SIGTERM), stop_worker (SIGSTOP past
# the lease), kill_scheduler, restart_db_fast, restart_db_immediate, and through a TCP proxy
# (bench/src/bin/cutproxy.rs) for 20 s: cut_worker (no byte passes; the server keeps the
# sessions), reset_worker (connections closed, new ones refused), cut_scheduler (the active
# one, with a standby beside it). TRIALS="a b" picks some; ROUNDS=N repeats them.
# Figures: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weir -p weir-bench --bin weir --bin cutproxy
weir=$PWD/target/release/weir
cutproxy=$PWD/target/release/cutproxy
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
  local dir=$tmp/$name$2
  mkdir -p "$dir/dags"
  psql -q "$admin" -c "CREATE DATABASE $name$2" >/dev/null
  cat > "$dir/weir.toml" <<TOML
database_url = "postgres://postgres@127.0.0.1:$port/$name$2"
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
      echo "      echo \"start \$WEIR_TASK_ID \$WEIR_TRY_NUMBER \$(date +%s.%N)\" >> $dir/ledger"
      echo "      for k in 1 2 3 4 5 6 7 8 9 10; do sleep 0.2; echo \"tick \$WEIR_TASK_ID \$WEIR_TRY_NUMBER \$(date +%s.%N)\" >> $dir/ledger; done"
      echo "      echo \"end \$WEIR_TASK_ID \$WEIR_TRY_NUMBER \$(date +%s.%N)\" >> $dir/ledger"
    done
  } > "$dir/dags/fan.yaml"
  cd "$dir"
  "$weir" db migrate >/dev/null
  # The network trials put one process behind a proxy the trial controls.
  local direct="postgres://postgres@127.0.0.1:$port/$name$2"
  local proxied=$direct
  case $name in
    cut_*|reset_*)
      mkfifo "$dir/proxy.in"
      "$cutproxy" "$port" < "$dir/proxy.in" > "$dir/proxy.port" & pids+=($!)
      exec 7> "$dir/proxy.in"
      until [ -s "$dir/proxy.port" ]; do sleep 0.05; done
      proxied="postgres://postgres@127.0.0.1:$(head -1 "$dir/proxy.port")/$name$2"
      ;;
  esac
  local sched_url=$direct
  local w1_url=$direct
  case $name in cut_scheduler) sched_url=$proxied ;; cut_worker|reset_worker) w1_url=$proxied ;; esac
  WEIR_DATABASE_URL=$sched_url "$weir" scheduler 2>"$dir/scheduler.log" & local sched=$!
  if [ "$name" = cut_scheduler ]; then
    sleep 1
    "$weir" scheduler 2>"$dir/standby.log" & pids+=($!)
  fi
  WEIR_DATABASE_URL=$w1_url "$weir" worker --concurrency 4 2>"$dir/worker1.log" & local w1=$!
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
    cut_*) echo cut >&7; (sleep 20; echo heal >&7) & ;;
    reset_*) echo reset >&7; (sleep 20; echo heal >&7) & ;;
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
# Per task, per try: its start, last line, and whether it ended.
spans = collections.defaultdict(dict)
for line in open(ledger):
    kind, task, try_number, at = line.split()
    at = float(at)
    first, last, ended_ = spans[task].get(try_number, (at, at, False))
    spans[task][try_number] = (min(first, at), max(last, at), ended_ or kind == "end")
tasks = [f"t{i:02d}" for i in range(1, 41)]
lost = sum(1 for t in tasks if not any(e for _, _, e in spans[t].values()))
repeated = sum(max(0, len(spans[t]) - 1) for t in tasks)
overlapping = 0
for t in tasks:
    runs = list(spans[t].values())
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            if runs[j][0] < runs[i][1] and runs[i][0] < runs[j][1]:
                overlapping += 1
print(f"{name:22} run {state:10} lost {lost:2}  repeated {repeated:2}  overlapping {overlapping:2}  fault to end {ended - fault:5.1f} s")
PY
  for p in "$sched" "$w1" "$w2"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$weir worker" 2>/dev/null || true
  pkill -9 -f "$weir scheduler" 2>/dev/null || true
  pkill -9 -f "$cutproxy" 2>/dev/null || true
  exec 7>&- 2>/dev/null || true
  cd - >/dev/null
}

for round in $(seq 1 "${ROUNDS:-1}"); do
  for t in ${TRIALS:-kill_worker term_worker stop_worker kill_scheduler restart_db_fast restart_db_immediate cut_worker reset_worker cut_scheduler}; do
    trial "$t" "$round"
  done
done
