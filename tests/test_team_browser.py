"""The marketer's view, for real: headless Chromium signed in as `marketer` on the team server.

The analyst logs an iteration; the marketer opens the campaign's runs table (MLflow's UI behind
basic-auth sign-in) and reads the run; without credentials the server answers 401. Debian's chromium
is driven through Playwright for Python, as in test_jupyterlab_browser.py; the screenshot is kept
in test-artifacts/ for people to look at.
"""

from __future__ import annotations

import os

import pytest

from tests._browser import CHROMIUM, debian_chromium
from tests._team_servers import Team
from tests.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]

RUN_NAME = "#1 SHIP personal +16%"


def _logged_run(team: Team) -> str:
    """An iteration logged by the analyst; returns its experiment's id."""
    from mlflow.tracking import MlflowClient

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"] = "analyst"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = team.server.password("analyst")
    try:
        client = MlflowClient(tracking_uri=team.server.url)
        experiment_id = client.create_experiment("browser-campaign")
        client.set_experiment_tag(
            experiment_id, "mlflow.experimentKind", "custom_model_development"
        )
        run = client.create_run(experiment_id, run_name=RUN_NAME)
        client.log_metric(run.info.run_id, "decision.rel_lift", 0.16)
        client.set_terminated(run.info.run_id)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return experiment_id


def test_the_marketer_signs_in_and_reads_the_runs_table(team: Team) -> None:
    import requests
    from playwright.sync_api import expect

    experiment_id = _logged_run(team)
    url = f"{team.server.url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert requests.get(team.server.url, timeout=30).status_code == 401  # no sign-in, no page
    with debian_chromium() as browser:
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900},
                http_credentials={
                    "username": "marketer",
                    "password": team.server.password("marketer"),
                },
            )
            page = context.new_page()
            page.goto(url)
            expect(page.get_by_text(RUN_NAME).first).to_be_visible(timeout=120_000)
            expect(page.get_by_text("browser-campaign").first).to_be_visible()
            expect(page.get_by_text("marketer", exact=True).first).to_be_visible()  # signed in
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            if browser.contexts and browser.contexts[0].pages:
                browser.contexts[0].pages[0].screenshot(path=str(ARTIFACTS / "team-marketer.png"))
