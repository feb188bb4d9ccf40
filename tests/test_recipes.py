"""The scheduling recipes in recipes/ call the CLI as it is (checked without running Airflow)."""

from __future__ import annotations

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


def test_airflow_dag_imports_when_airflow_is_installed() -> None:
    pytest.importorskip("airflow")
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DAG), include_examples=False)
    assert not bag.import_errors
    assert "loopexp_spring_newsletter" in bag.dags


def test_cron_recipe_is_valid_bash_and_refuses_missing_arguments() -> None:
    assert subprocess.run(["bash", "-n", str(CRON)], check=False).returncode == 0
    result = subprocess.run(["bash", str(CRON)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage" in result.stderr
