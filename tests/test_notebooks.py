"""The notebooks as readers meet them: committed clean, run as-is, readable, the tree kept clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from loopexp.run.notebook import execute
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs_or_run_metadata(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert "papermill" not in nb["metadata"], "an executed notebook was committed"
    for cell in nb["cells"]:
        assert not cell.get("outputs") and cell.get("execution_count") is None, path
        assert "execution" not in cell.get("metadata", {}), f"{path}: strip cell run metadata"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_notebooks_are_in_the_form_nbstripout_commits(tmp_path: Path) -> None:
    """Saving from JupyterLab and committing through the nbstripout hook changes nothing else."""
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    assert "nbstripout" in config
    nbstripout = Path(sys.executable).parent / "nbstripout"
    copies = [Path(shutil.copy(p, tmp_path / p.name)) for p in NOTEBOOKS]
    subprocess.run([str(nbstripout), *map(str, copies)], check=True)
    for original, stripped in zip(NOTEBOOKS, copies, strict=True):
        assert stripped.read_bytes() == original.read_bytes(), f"run nbstripout on {original}"


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list[str]:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "text" and out.get("output_type") == "stream":
                found.append(out["text"])
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git checkout of the notebooks, specs and .gitignore, committed: as a user's clone."""
    repo = tmp_path_factory.mktemp("checkout")
    for folder in ("notebooks", "experiments"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "clone")
    return repo


def _git_status(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.mark.integration
def test_analysis_notebook_runs_as_is_readable_and_leaves_the_tree_clean(
    checkout: Path, tmp_path: Path
) -> None:
    folder = checkout / "notebooks"
    # As JupyterLab runs it: defaults only, working folder = the notebook's folder.
    executed = execute(folder / "analyze_experiment.ipynb", tmp_path / "out.ipynb", {}, cwd=folder)
    assert _git_status(checkout) == "", "running the notebook dirtied the checkout"
    assert (folder / "runs" / "analyze_experiment" / "results.json").is_file()

    nb = nbformat.read(executed, as_version=4)
    plain = "\n".join(_outputs(nb, "text/plain") + _outputs(nb, "text"))
    assert _outputs(nb, "image/png"), "the lift plot is not rendered inline"
    for cell in nb.cells:  # "<Figure size …>" only as the text fallback beside the picture
        for out in cell.get("outputs", []):
            if "<Figure size" in out.get("data", {}).get("text/plain", ""):
                assert "image/png" in out["data"], "a figure shown as text, not as a picture"
    text = "\n".join(_outputs(nb, "text"))
    assert "Decision: Ship the winner: personal." in text
    tables = "\n".join(_outputs(nb, "text/html"))
    assert "interval of the lift" in tables and "chance to beat control" in tables
    # the intervals are quoted at the level their Holm-adjusted test used (two challengers)
    assert "(97.5%)" in tables and "95% interval of the lift" not in tables
    for raw in ("p_value_adjusted", "rel_ci_low", "prob_beat_control"):
        assert raw not in tables + plain, f"raw field name {raw} shown to readers"
    assert "+15.6%" in tables, "lifts are shown as percentages"


@pytest.mark.integration
def test_plan_notebook_plans_from_history_and_writes_json_where_asked(
    checkout: Path, tmp_path: Path
) -> None:
    folder = checkout / "notebooks"
    history = tmp_path / "history.json"
    shutil.copy(ROOT / "tests" / "data" / "results-history.json", history)
    result = tmp_path / "plans" / "plan.json"
    executed = execute(
        folder / "plan_experiment.ipynb",
        tmp_path / "plan.ipynb",
        {"history_path": str(history), "result_path": str(result), "audience_size": 200_000},
        cwd=folder,
    )
    plan = json.loads(result.read_text())
    assert plan["schema_version"] == "1" and plan["baseline_source"].startswith("pooled from 1")
    history_control = next(
        v for v in json.loads(history.read_text())["variants"] if v["is_control"]
    )["metrics"]["click_rate"]
    assert plan["baseline"] == pytest.approx(
        history_control["numerator"] / history_control["denominator"]
    )
    nb = nbformat.read(executed, as_version=4)
    assert _outputs(nb, "image/png")
    text = "\n".join(_outputs(nb, "text"))
    assert f"{plan['per_variant']:,} recipients" in text and "enough." in text
    assert _git_status(checkout) == ""
