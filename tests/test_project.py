"""The project's contracts with a new user: README, environment.yml, notebooks, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import yaml
from typer.testing import CliRunner

from loopexp.cli import app
from tests.conftest import DEMO_SPEC, ROOT

runner = CliRunner()


def test_environment_yml_mirrors_pyproject() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"]
    assert project["requires-python"].startswith(">=3.11")
    pip = [d["pip"] for d in deps if isinstance(d, dict)]
    assert pip == [["-e .[dev]"]], "environment.yml must install the package from pyproject"
    # Nothing else: a conda package listed here would drift from pyproject's pins.
    assert sorted(d for d in deps if isinstance(d, str)) == ["pip", "python=3.11"]
    assert "dev" in project["optional-dependencies"]


def test_notebooks_are_committed_clean_and_parameterised() -> None:
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path}: exactly one cell tagged 'parameters'"


def test_papermill_documents_the_notebook_parameters() -> None:
    papermill = ROOT / ".venv" / "bin" / "papermill"
    exe = str(papermill) if papermill.exists() else "papermill"
    out = subprocess.run(
        [exe, "--help-notebook", str(ROOT / "notebooks" / "analyze_experiment.ipynb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("spec_path: str", "events_path: str", "assignment_path: str", "results_path: str"):
        assert name in out


def test_readme_quickstart_runs(tmp_path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has a Python quickstart"
    quickstart = blocks[0]
    assert len(quickstart.strip().splitlines()) <= 10
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / DEMO_SPEC.name).write_text(DEMO_SPEC.read_text())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(quickstart, "README.md", "exec"), namespace)
    assert namespace["results"].decision.winner == "personal"
    assert namespace["nxt"].iteration == 2


def test_cli_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "validate", "run", "plan", "assign", "simulate", "init"):
        assert command in result.output


def test_cli_validate_accepts_examples_and_locates_errors(tmp_path) -> None:
    ok = runner.invoke(app, ["validate", *map(str, (ROOT / "experiments").glob("*.yaml"))])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        DEMO_SPEC.read_text().replace("primary_metric: click_rate", "primary_metric: clicks")
    )
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml" in result.output and "primary_metric" in result.output
    line = next(i for i, s in enumerate(bad.read_text().splitlines(), 1) if "primary_metric:" in s)
    assert f"line {line}" in result.output


def test_cli_plan_prints_sample_size() -> None:
    result = runner.invoke(app, ["plan", str(DEMO_SPEC), "--baseline", "0.04"])
    assert result.exit_code == 0, result.output
    assert "per variant" in result.output


def test_module_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loopexp.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "Closed-loop email experimentation" in out.stdout
