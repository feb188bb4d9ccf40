"""The CLI as a scheduler calls it: simulate → run, and its exit codes on bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.design.spec import load_spec
from tests.conftest import DEMO_SPEC

runner = CliRunner()


@pytest.mark.integration
def test_simulate_then_run_writes_next_spec_beside_the_spec(tmp_path: Path) -> None:
    spec = Path(shutil.copy(DEMO_SPEC, tmp_path / DEMO_SPEC.name))
    data = tmp_path / "data"
    sim = runner.invoke(
        app,
        [
            "simulate",
            str(spec),
            "--out",
            str(data),
            "--recipients",
            "9000",
            "--seed",
            "3",
            "--open-lift",
            "personal=1.8",
        ],
    )
    assert sim.exit_code == 0, sim.output
    run = runner.invoke(
        app,
        [
            "run",
            str(spec),
            "--events",
            str(data / "events.parquet"),
            "--assignment",
            str(data / "assignment.parquet"),
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert run.exit_code == 0, run.output
    assert "ship" in run.output and "personal" in run.output
    assert "workflowType=machine_learning" in run.output
    nxt = tmp_path / "spring-newsletter-iter2.yaml"
    assert load_spec(nxt).control == "personal"
    assert (tmp_path / "out" / "decision.json").exists()


def test_run_with_missing_events_exits_2_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    result = runner.invoke(
        app,
        [
            "run",
            str(DEMO_SPEC),
            "--events",
            str(missing),
            "--assignment",
            str(missing),
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'db'}",
        ],
    )
    assert result.exit_code == 2
    assert "nope.parquet" in result.output


def test_run_with_a_bad_spec_exits_2_before_any_work(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO_SPEC.read_text().replace("control: control", "control: nobody"))
    result = runner.invoke(
        app, ["run", str(bad), "--events", "x.parquet", "--assignment", "y.parquet"]
    )
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "nobody" in result.output
    assert not (tmp_path / "runs").exists()
