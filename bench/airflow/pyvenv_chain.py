# The Airflow side of bench/python-airflow.sh: 20 chained PythonVirtualenvOperator tasks with
# the same requirements and a venv cache (venv_cache_path), the counterpart of weir's
# python-chain benchmark (bench/python.sh).
import os

import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.python import PythonVirtualenvOperator


def noop():
    pass


with DAG("pyvenv_chain", start_date=pendulum.datetime(2024, 1, 1), schedule=None, catchup=False):
    previous = None
    for i in range(20):
        t = PythonVirtualenvOperator(
            task_id=f"t{i:03}",
            python_callable=noop,
            requirements=["six==1.16.0"],
            venv_cache_path=os.environ["BENCH_VENV_CACHE"],
            system_site_packages=False,
        )
        if previous is not None:
            previous >> t
        previous = t
