"""A data scientist's session, for real: JupyterLab on 127.0.0.1, headless Chromium, Run All.

JupyterLab is started by the test on a free port with a token, in a temporary copy of the
notebooks; Debian's chromium is driven through Playwright for Python (never `playwright install`).
The screenshot is kept in test-artifacts/ (ignored by git) for people to look at.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._browser import CHROMIUM, debian_chromium
from tests.conftest import ROOT, _free_port

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on a tmp copy of notebooks/ and experiments/; yields (url, token)."""
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    root = tmp_path / "lab"
    for folder in ("notebooks", "experiments"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # closed_loop_report.ipynb reads a campaign back from MLflow (sqlite:///mlflow.db beside the
    # notebook, its default): two hands-off iterations of the demo campaign put one there.
    demo = subprocess.run(
        [
            str(Path(sys.executable).parent / "loopexp"),
            "demo",
            "--iterations",
            "2",
            "--recipients",
            "20000",
            "--out",
            str(tmp_path / "demo"),
            "--tracking-uri",
            f"sqlite:///{root / 'notebooks' / 'mlflow.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert demo.returncode in (0, 3), demo.stdout + demo.stderr
    home = tmp_path / "jupyter"  # no user settings, workspaces or kernels from outside the test
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    # Render every cell, not only those in view (JupyterLab's default windowing), so the page can
    # be searched for any output once all cells ran.
    tracker = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    log_path = tmp_path / "jupyterlab.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "jupyter"),
                "lab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root / 'notebooks'}",
                "--LabApp.news_url=",  # no fetching of news from the internet
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited early:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab not up in 120 s:\n{log_path.read_text()}")
                time.sleep(0.5)
        yield url, token
    finally:
        # Shut kernels down with the server (a plain SIGTERM may leave a kernel behind).
        try:
            request = urllib.request.Request(
                f"{url}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
            )
            urllib.request.urlopen(request, timeout=10).close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# Per notebook: text its last cells print when all ran, and words a reader must find on the page.
NOTEBOOK_PAGES = {
    "analyze_experiment.ipynb": (
        "Results for other tools:",
        "Decision: Ship the winner: personal.",
    ),
    "plan_experiment.ipynb": ("Plan for other tools:", "each of the 3 variants needs 47,805"),
    "send_time.ipynb": ("Analysis for other tools:", "is the most probably best slot"),
    "closed_loop_report.ipynb": (
        "Report for other tools:",
        "weekly-offers: 2 iteration(s) read back from MLflow.",
    ),
}


@pytest.mark.parametrize("name", list(NOTEBOOK_PAGES))
def test_notebook_runs_top_to_bottom_in_jupyterlab(jupyterlab: tuple[str, str], name: str) -> None:
    from playwright.sync_api import expect

    done_text, reader_text = NOTEBOOK_PAGES[name]

    url, token = jupyterlab
    with debian_chromium() as browser:
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # What a person does with the pop-ups of a first visit: keep the notebook's kernel
            # ("Python 3", this venv's Python) and decline the news feed.
            select_kernel = page.get_by_role("dialog").get_by_role("button", name="Select Kernel")
            page.add_locator_handler(select_kernel, lambda button: button.click())
            news = page.get_by_role("alert").filter(has_text="Jupyter news")
            page.add_locator_handler(
                news, lambda alert: alert.get_by_role("button", name="No").click()
            )
            # A workspace of its own, so no tab of another test's session is restored beside it.
            page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}")
            notebook = page.locator(".jp-NotebookPanel")
            expect(notebook).to_be_visible(timeout=60_000)
            # Wait for the kernel itself: the notebook's indicator says "idle" before one exists.
            kernel = page.get_by_role("button", name="Python 3 (ipykernel) | Idle")
            expect(kernel).to_be_visible(timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            outputs = notebook.locator(".jp-OutputArea-output")  # not the code that prints them
            expect(outputs.get_by_text(done_text)).to_be_visible(timeout=240_000)
            expect(notebook.locator(".jp-OutputArea-error")).to_have_count(0)
            expect(outputs.get_by_text(reader_text)).to_be_visible()
            plot = notebook.locator(".jp-RenderedImage img").first
            expect(plot).to_be_visible()
            assert plot.evaluate("img => img.naturalWidth") > 300, "the plot did not load"
            assert "<Figure size" not in notebook.inner_text()
            plot.scroll_into_view_if_needed()
        finally:
            # Kept for people to look at (or to see what went wrong when the test failed).
            ARTIFACTS.mkdir(exist_ok=True)
            if browser.contexts and browser.contexts[0].pages:
                shot = ARTIFACTS / f"jupyterlab-{Path(name).stem}.png"
                browser.contexts[0].pages[0].screenshot(path=str(shot))
