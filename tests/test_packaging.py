"""What ships with loopexp: notebooks and example specs as package data, `init`, the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.design.parts import TestType
from loopexp.design.resources import EXAMPLE_SPECS, example_spec_path, notebook_path, starter_spec
from loopexp.design.spec import load_spec, parse_spec
from tests.conftest import ROOT

runner = CliRunner()


def test_shipped_files_are_found_through_importlib_resources() -> None:
    # In this (editable) checkout the shipped files are the repository's top-level folders.
    assert (
        notebook_path("analyze_experiment.ipynb") == ROOT / "notebooks" / "analyze_experiment.ipynb"
    )
    assert (
        example_spec_path("subject_line_demo.yaml").read_bytes()
        == (ROOT / "experiments" / "subject_line_demo.yaml").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match=r"subject_line_demo\.yaml"):
        example_spec_path("nope.yaml")


@pytest.mark.parametrize("test_type", list(TestType))
def test_every_test_type_has_a_valid_commented_example(test_type: TestType) -> None:
    path = ROOT / "experiments" / EXAMPLE_SPECS[test_type]
    spec = load_spec(path)
    assert spec.test_type == test_type
    text = path.read_text()
    commented = [line for line in text.splitlines() if "#" in line]
    assert len(commented) >= 10, f"{path.name}: a starter spec explains its fields in comments"
    # Each variant says what it differs in.
    field = {
        "subject_line": "subject",
        "content": "content",
        "send_time": "send_time",
        "preheader": "preheader",
        "from_name": "from_name",
        "multivariate": "cell",
        "flow": "description",
    }[test_type]
    assert all(getattr(v, field) for v in spec.variants), f"{path.name}: every variant sets {field}"


def test_every_yaml_in_experiments_is_a_valid_spec() -> None:
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        load_spec(path)


@pytest.mark.parametrize("test_type", list(TestType))
def test_init_writes_a_valid_commented_starter(tmp_path: Path, test_type: TestType) -> None:
    target = tmp_path / "experiments" / "black-friday.yaml"
    result = runner.invoke(app, ["init", "--type", test_type.value, str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    spec = parse_spec(text, source=target)
    assert (spec.campaign, spec.iteration, spec.test_type) == ("black-friday", 1, test_type)
    assert "# " in text and "loopexp validate" in result.output
    example = load_spec(example_spec_path(EXAMPLE_SPECS[test_type]))
    assert spec.salt != example.salt and spec.name != example.name
    # Two starters of the same campaign never share a salt (their splits would correlate).
    assert yaml.safe_load(starter_spec(test_type, "black-friday"))["salt"] != spec.salt


def test_init_default_path_and_refusal_to_overwrite(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["init", "--campaign", "spring", "--type", "content"])
    assert first.exit_code == 0, first.output
    written = tmp_path / "experiments" / "spring-content.yaml"
    before = written.read_text()
    again = runner.invoke(app, ["init", "--campaign", "spring", "--type", "content"])
    assert again.exit_code == 2 and "--force" in again.output
    assert written.read_text() == before
    forced = runner.invoke(app, ["init", "--campaign", "spring", "--type", "content", "--force"])
    assert forced.exit_code == 0 and written.read_text() != before  # a fresh salt


def test_init_rejects_a_campaign_name_with_spaces(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(tmp_path / "Black Friday.yaml")])
    assert result.exit_code == 2
    assert "Black Friday" in result.output and "--campaign" in result.output
    assert not list(tmp_path.iterdir())


def _uv() -> str:
    found = Path(sys.executable).parent / "uv"  # `make install` puts uv in the venv
    return str(found) if found.exists() else (shutil.which("uv") or pytest.skip("uv not found"))


@pytest.mark.integration
def test_installed_wheel_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    """Build sdist + wheel as a release would, install the wheel into a fresh venv, run the demo.

    Nothing of the checkout is visible to the installed package: it must find its notebook and
    example spec inside the wheel (PyPI is reachable; uv's cache makes the install quick).
    """
    uv = _uv()
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True
    )
    (wheel,) = dist.glob("loopexp-*.whl")
    venv = tmp_path / "venv"
    subprocess.run(
        [uv, "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), str(wheel)], check=True, capture_output=True
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(venv / "bin" / "loopexp"), "demo", "--recipients", "9000"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Decision" in result.stdout and "status" in result.stdout
    installed = subprocess.run(
        [str(python), "-c", "import loopexp.design.resources as r; print(r.notebooks_dir())"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(venv) in installed, "the notebook came from the checkout, not the wheel"
    assert (empty / "runs" / "demo" / "analysis" / "results.json").is_file()
    assert (empty / "mlflow.db").is_file()

    # Issue #30: a wheel user gets the notebooks with `loopexp notebooks DIR`, and each runs top
    # to bottom as shipped (defaults only) from that folder, with the wheel's Python as kernel.
    notebooks = tmp_path / "my-notebooks"
    copied = subprocess.run(
        [str(venv / "bin" / "loopexp"), "notebooks", str(notebooks)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stdout + copied.stderr
    names = sorted(p.name for p in notebooks.glob("*.ipynb"))
    assert len(names) >= 4, names
    for name in names:
        ran = subprocess.run(
            [str(python), "-c", "import sys; from loopexp.run.notebook import execute; "
             "execute(sys.argv[1], sys.argv[2], {}, cwd='.')", name, f"runs/{name}"],
            cwd=notebooks, env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, f"{name} failed as shipped:\n{ran.stdout}\n{ran.stderr}"
    assert not (notebooks / "mlflow.db").exists(), "a notebook left an empty store behind"


@pytest.mark.parametrize("test_type", list(TestType))
def test_every_example_spec_goes_round_the_loop(tmp_path: Path, test_type: TestType) -> None:
    """Each example can be simulated, analysed and iterated (as `loopexp demo --spec` does)."""
    from loopexp import analyze_files, next_spec, simulate_campaign
    from loopexp.sim.simulate import DEMO_EFFECTS

    spec = load_spec(example_spec_path(EXAMPLE_SPECS[test_type]))
    if spec.flow is not None:  # a flow test: its own simulator and analysis (issue 26)
        from loopexp.analysis.flow import analyze_flow_files
        from loopexp.sim.flows import DEMO_FLOW_TRUTHS, simulate_flow

        flow = simulate_flow(spec, DEMO_FLOW_TRUTHS[spec.flow.id], 5_000, seed=3)
        results = analyze_flow_files(spec, *flow.write(tmp_path)).results
    else:
        events, assignment = simulate_campaign(spec, 5_000, DEMO_EFFECTS, seed=3).write(tmp_path)
        _, results = analyze_files(spec, events, assignment)
    assert results.decision.primary_metric == spec.primary_metric
    assert {v.id for v in results.variants} >= {v.id for v in spec.variants}
    assert next_spec(spec, results).iteration == 2
