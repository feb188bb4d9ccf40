"""Airflow DAG: analyse an experiment's iteration every morning with ``loopexp run``.

Copy this file into Airflow's ``dags/`` folder and set the paths below (or the environment
variables). ``loopexp run`` is idempotent (the same spec and data report the existing MLflow run),
locks the experiment, and exits with documented codes, which the task maps to Airflow states:

- 0 decided (ship / no difference / guardrail veto): success; the next spec is written.
- 3 keep testing: skipped (nothing to act on yet; the next morning's run tries again).
- 5 another run holds the experiment's lock: failed, then retried.
- 1 failure, 2 bad input, 4 invalid split: failed (a human looks; a failed notebook is a FAILED
  MLflow run with the partial notebook; results kept locally are logged by ``loopexp upload``).
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

PROJECT = os.environ.get("LOOPEXP_PROJECT", "/srv/loopexp")
SPEC = os.environ.get("LOOPEXP_SPEC", "experiments/spring-newsletter-iter2.yaml")
EVENTS = os.environ.get("LOOPEXP_EVENTS", "exports/spring/*.parquet")
ASSIGNMENT = os.environ.get("LOOPEXP_ASSIGNMENT", "sends/assignment.parquet")
TRACKING_URI = os.environ.get("LOOPEXP_TRACKING_URI", "http://127.0.0.1:5000")

#: The arguments of ``loopexp`` (tests check them against the CLI).
LOOPEXP_ARGS = [
    "run",
    SPEC,
    "--events",
    EVENTS,
    "--assignment",
    ASSIGNMENT,
    "--tracking-uri",
    TRACKING_URI,
]
BASH_COMMAND = f"cd {shlex.quote(PROJECT)} && .venv/bin/loopexp {shlex.join(LOOPEXP_ARGS)}"
KEEP_TESTING_EXIT = 3

# --- Airflow from here on (the part above is plain Python, importable without Airflow) ---
try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="loopexp_spring_newsletter",
    description="Analyse the spring newsletter's current iteration; write the next spec",
    schedule="0 7 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["loopexp"],
) as dag:
    BashOperator(
        task_id="loopexp_run",
        bash_command=BASH_COMMAND,
        skip_on_exit_code=KEEP_TESTING_EXIT,
        retries=2,
        retry_delay=timedelta(minutes=10),
    )
