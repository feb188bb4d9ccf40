"""The scheduling recipes in recipes/ call the CLI as it is; the DAG loads in a real Airflow."""

from __future__ import annotations

import json
import py_compile
import shlex
import subprocess
from pathlib import Path

import pytest
import typer.main

from loopexp.cli import app
from tests.conftest import ROOT

DAG = ROOT / "recipes" / "airflow_dag.py"
CRON = ROOT / "recipes" / "loopexp-cron.sh"
AIRFLOW_MARK = "# --- Airflow from here on"


def _plain_part() -> dict[str, object]:
    """Execute the DAG file's plain-Python part (everything before the Airflow imports)."""
    source = DAG.read_text()
    assert AIRFLOW_MARK in source
    namespace: dict[str, object] = {"__name__": "airflow_dag_config"}
    exec(compile(source.split(AIRFLOW_MARK)[0], str(DAG), "exec"), namespace)
    return namespace


def test_airflow_dag_compiles_and_its_command_parses_with_the_cli(tmp_path: Path) -> None:
    py_compile.compile(str(DAG), cfile=str(tmp_path / "dag.pyc"), doraise=True)
    config = _plain_part()
    args = config["LOOPEXP_ARGS"]
    assert args[0] == "run"
    # The command line Airflow runs is the one the CLI accepts: click parses it without error.
    command = typer.main.get_command(app)
    run = command.commands["run"]
    ctx = run.make_context("run", list(args[1:]))
    assert ctx.params["events"] == Path(config["EVENTS"])
    assert ctx.params["tracking_uri"] == config["TRACKING_URI"]
    bash = str(config["BASH_COMMAND"])
    assert shlex.split(bash.split("&&", 1)[1])[1:] == list(args)
    assert config["KEEP_TESTING_EXIT"] == 3  # loopexp.cli.errors.EXIT_KEEP_TESTING


#: Airflow's own venv, made by `make test` (its pins clash with MLflow's, so not in .venv).
AIRFLOW_PYTHON = ROOT / ".venv-airflow" / "bin" / "python"
DAGBAG_CHECK = """
import json, sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("loopexp_spring_newsletter")
task = dag.tasks[0] if dag else None
print(json.dumps({
    "errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "bash_command": getattr(task, "bash_command", None),
    "skip_on_exit_code": sorted(getattr(task, "skip_on_exit_code", None) or []),
}))
"""


def test_airflow_loads_the_dag_and_its_task_runs_the_cli_command(tmp_path: Path) -> None:
    """The recipe in a real Airflow DagBag: no import error, the task runs the checked command."""
    if not AIRFLOW_PYTHON.exists():
        pytest.skip("Airflow's venv is missing: `make test` creates .venv-airflow")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    out = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", DAGBAG_CHECK, str(DAG)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=300,
    )
    bag = json.loads(out.stdout.strip().splitlines()[-1])
    assert bag["errors"] == {}
    assert bag["dags"] == ["loopexp_spring_newsletter"]
    config = _plain_part()
    assert bag["bash_command"] == config["BASH_COMMAND"]
    assert bag["skip_on_exit_code"] == [config["KEEP_TESTING_EXIT"]]


def test_cron_recipe_is_valid_bash_and_refuses_missing_arguments() -> None:
    assert subprocess.run(["bash", "-n", str(CRON)], check=False).returncode == 0
    result = subprocess.run(["bash", str(CRON)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr
