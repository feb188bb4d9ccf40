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

from tests.conftest import ROOT, _free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on a tmp copy of notebooks/ and experiments/; yields (url, token)."""
    root = tmp_path / "lab"
    for folder in ("notebooks", "experiments"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "jupyter"  # no user settings, workspaces or kernels from outside the test
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
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


def test_analysis_notebook_runs_top_to_bottom_in_jupyterlab(jupyterlab: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, token = jupyterlab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
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
            page.goto(f"{url}/lab/tree/analyze_experiment.ipynb?token={token}")
            notebook = page.locator(".jp-NotebookPanel")
            expect(notebook).to_be_visible(timeout=60_000)
            # Wait for the kernel itself: the notebook's indicator says "idle" before one exists.
            kernel = page.get_by_role("button", name="Python 3 (ipykernel) | Idle")
            expect(kernel).to_be_visible(timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            decision = notebook.get_by_text("Decision: Ship the winner: personal.")
            expect(decision).to_be_visible(timeout=180_000)
            plot = notebook.locator(".jp-RenderedImage img").first
            expect(plot).to_be_visible()
            assert plot.evaluate("img => img.naturalWidth") > 300, "the lift plot did not load"
            assert "<Figure size" not in notebook.inner_text()
            expect(notebook.get_by_text("95% interval of the lift").first).to_be_visible()
            plot.scroll_into_view_if_needed()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-analyze_experiment.png"))
        finally:
            browser.close()
