#!/usr/bin/env bash
# Airflow's PythonVirtualenvOperator next to weir's `python` tasks (bench/python.sh): Apache
# Airflow 3.3.2, installed with uv into target/bench-airflow (once), runs 20 chained
# PythonVirtualenvOperator tasks sharing a cached virtualenv with `airflow dags test` (in one
# process, no scheduler: Airflow's fastest path). The first run builds the cache and is not
# counted; then ROUNDS runs print the median time from one task's start to the next one's.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
venv=target/bench-airflow/venv
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
uv=$(ls target/test-tools/python/uv/*/bin/uv 2>/dev/null | head -1 || true)
if [ ! -x "$venv/bin/airflow" ]; then
  if [ -z "$uv" ]; then python3 -m venv target/bench-airflow/uv && target/bench-airflow/uv/bin/pip install -q uv==0.13.9 && uv=target/bench-airflow/uv/bin/uv; fi
  "$uv" venv -q --python 3.11 "$venv"
  "$uv" pip install -q --python "$venv/bin/python" "apache-airflow==3.3.2" virtualenv
fi
export AIRFLOW_HOME=$home AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER=$PWD/bench/airflow
export BENCH_VENV_CACHE=$home/venvs PATH=$PWD/$venv/bin:$PATH
airflow db migrate >/dev/null 2>&1
for i in $(seq 0 "$rounds"); do
  log=$home/run$i.log
  start=$(date +%s.%N)
  airflow dags test pyvenv_chain "2024-01-0$((i + 1))" >"$log" 2>&1
  end=$(date +%s.%N)
  [ "$i" -eq 0 ] && continue # the run that builds the venv cache
  python3 - "$log" "$start" "$end" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
def secs(t):
    h, m, s = t.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)
starts = [secs(t) for t in re.findall(r"T(\d\d:\d\d:\d\d\.\d+)Z \[info\s+\] \[DAG TEST\] running task", text)]
assert len(starts) == 20 and "state=success" in text, "the Airflow run did not succeed"
gaps = [b - a for a, b in zip(starts, starts[1:])]
print(f"airflow 3.3.2 PythonVirtualenvOperator chain20 (dags test, warm venv cache): "
      f"{float(sys.argv[3]) - float(sys.argv[2]):.2f} s wall with the CLI's start; "
      f"task start to next task start median {statistics.median(gaps) * 1000:.0f} ms")
PY
done
