"""Notebooks for every install (issue #30): ``loopexp notebooks DIR`` copies the shipped ones,
``loopexp lab`` opens them in JupyterLab with this Python's kernel, the closed-loop report runs
top to bottom as shipped from an empty folder, and each figure is shown once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.design.resources import notebooks_dir
from loopexp.run.notebook import execute
from tests.conftest import ROOT

SHIPPED = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
runner = CliRunner()


def _shipped_copy(folder: Path) -> Path:
    """The checkout's notebooks in a fresh folder, as ``loopexp notebooks`` leaves them."""
    folder.mkdir(parents=True)
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _pngs_per_cell(nb: nbformat.NotebookNode) -> list[int]:
    return [
        sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


def test_notebooks_copies_the_shipped_notebooks_and_keeps_work(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    done = runner.invoke(app, ["notebooks", str(folder)])
    assert done.exit_code == 0, done.output
    copied = sorted(p.name for p in folder.glob("*.ipynb"))
    assert copied == sorted(p.name for p in notebooks_dir().glob("*.ipynb"))
    assert set(SHIPPED) <= set(copied)
    assert {"analyze_experiment.ipynb", "closed_loop_report.ipynb", "plan_experiment.ipynb",
            "send_time.ipynb"} <= set(copied)  # fmt: skip
    assert f"loopexp lab {folder}" in done.output.replace("\n", "")
    (folder / "send_time.ipynb").write_text("my work", encoding="utf-8")
    again = runner.invoke(app, ["notebooks", str(folder)])
    assert again.exit_code == 2 and "--force" in again.output
    assert (folder / "send_time.ipynb").read_text(encoding="utf-8") == "my work"
    assert runner.invoke(app, ["notebooks", str(folder), "--force"]).exit_code == 0
    assert (folder / "send_time.ipynb").read_bytes() == (
        notebooks_dir() / "send_time.ipynb"
    ).read_bytes()


@pytest.mark.integration
def test_closed_loop_report_runs_as_shipped_from_an_empty_folder(tmp_path: Path) -> None:
    folder = _shipped_copy(tmp_path / "empty")
    # Two simulated tests, not the default three: the wheel test runs it fully as shipped.
    executed = execute(
        folder / "closed_loop_report.ipynb", tmp_path / "out.ipynb", {"iterations": 2}, cwd=folder
    )
    assert not (folder / "mlflow.db").exists(), "an empty store was left beside the notebook"
    report = json.loads((folder / "runs" / "closed_loop_report" / "report.json").read_text())
    assert len(report["iterations"]) == 2
    page = (folder / "runs" / "closed_loop_report" / "report.html").read_text(encoding="utf-8")
    assert "What to test next" in page and "“" in page  # subject lines beside the variant ids
    pngs = _pngs_per_cell(nbformat.read(executed, as_version=4))
    assert sum(pngs) >= 1 and max(pngs) == 1, f"a figure shown twice: {pngs}"


@pytest.mark.integration
def test_send_time_shows_its_figure_once(tmp_path: Path) -> None:
    folder = _shipped_copy(tmp_path / "nb")
    executed = execute(
        folder / "send_time.ipynb", tmp_path / "out.ipynb", {"recipients": 8000}, cwd=folder
    )
    assert _pngs_per_cell(nbformat.read(executed, as_version=4)).count(1) == 1
    assert max(_pngs_per_cell(nbformat.read(executed, as_version=4))) == 1


def _get(url: str, timeout: float = 60) -> dict:
    """GET a JSON API, retrying while the server is still binding its port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return json.load(resp)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.integration
def test_lab_opens_the_copied_notebooks_in_jupyterlab(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    with socket.socket() as s:  # a free port (JupyterLab's port 0 prints a port it never binds)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loopexp.cli",
            "lab",
            str(folder),
            "--port",
            str(port),
            "--no-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        deadline, url = time.monotonic() + 180, None
        for line in proc.stdout:
            found = re.search(r"(http://127\.0\.0\.1:\d+/lab\?token=\w+)", line)
            if found:
                url = found.group(1)
                break
            assert time.monotonic() < deadline, "JupyterLab did not start"
        assert url, "JupyterLab printed no URL"
        base, token = url.split("/lab?token=")
        names = sorted(
            item["name"] for item in _get(f"{base}/api/contents?token={token}")["content"]
        )
        shipped = sorted(p.name for p in notebooks_dir().glob("*.ipynb"))
        assert [n for n in names if n.endswith(".ipynb")] == shipped
        assert "python3" in _get(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
