"""What a marketer sees in a real browser (issue #30): the link ``loopexp ui --campaign`` prints
opens the runs table with the decision, the lift with its interval and the summary as columns;
the compare view of three iterations has no NaN rows (every metric in every iteration).

A real ``loopexp ui`` (``mlflow server``) on a free port and Debian's chromium through Playwright;
screenshots go to ``test-artifacts/`` (ignored by git).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys

import pytest

from loopexp import load_spec, simulate_campaign
from loopexp.analysis.analyze import analyze_files
from loopexp.sim.simulate import DEMO_EFFECTS
from loopexp.track.tracking import log_run, resolve_tracking_uri
from tests._browser import CHROMIUM, debian_chromium
from tests.conftest import DEMO_SPEC, ROOT

pytestmark = pytest.mark.integration
ARTIFACTS = ROOT / "test-artifacts"

#: From an element, its nearest scrolling ancestor scrolled top to bottom; the text seen on the way.
SCROLL_AND_READ = """async (element) => {
  let box = element;
  while (box && !(box.scrollHeight > box.clientHeight + 5
                  && getComputedStyle(box).overflowY !== 'visible')) box = box.parentElement;
  if (!box) return 'no scroll box';
  let seen = '';
  for (let y = 0; y <= box.scrollHeight; y += 100) {
    box.scrollTop = y;
    await new Promise((done) => setTimeout(done, 150));
    seen += box.innerText + String.fromCharCode(10);
  }
  return seen;
}"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory):
    """Three logged iterations and ``loopexp ui`` on them: (printed link, run ids, store)."""
    folder = tmp_path_factory.mktemp("browser")
    uri = resolve_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    base, run_ids, parent = load_spec(DEMO_SPEC), [], None
    for iteration in (1, 2, 3):
        spec = base.model_copy(update={"iteration": iteration, "parent_run_id": parent})
        sim = simulate_campaign(spec, 6_000, DEMO_EFFECTS, seed=10 + iteration)
        events, assignment = sim.write(folder / f"iter{iteration}")
        _, results = analyze_files(spec, events, assignment)
        parent, _ = log_run(results, spec, [], uri)
        run_ids.append(parent)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopexp.cli", "ui", "--tracking-uri", uri, "--port", str(port),
         "--campaign", "spring-newsletter"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        link = None
        for line in proc.stdout:
            if line.startswith("MLflow UI: "):
                link = line.split()[2]
                break
        assert link and "viewStateShareKey=loopexp" in link, link
        yield link, run_ids, uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api")
    assert CHROMIUM.exists(), "Debian's chromium is needed (apt-get install chromium)"
    with debian_chromium() as chromium:
        yield chromium


def test_the_printed_link_shows_decision_lift_and_summary_columns(ui, browser) -> None:
    link, _, _ = ui
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(link, wait_until="domcontentloaded")
    for header in ("loopexp.decision.status", "loopexp.lift", "loopexp.summary"):
        page.get_by_text(header, exact=False).first.wait_for(timeout=90_000)
    # The cells: a decision and the lift with its interval, in the runs table itself.
    page.get_by_text("% CI").first.wait_for(timeout=30_000)
    body = page.inner_text("body")
    assert any(word in body for word in ("ship", "keep_testing", "no_difference"))
    page.screenshot(path=str(ARTIFACTS / "mlflow-decision-columns.png"))
    page.close()


def test_compare_view_of_three_iterations_has_no_nan_rows(ui, browser) -> None:
    link, run_ids, uri = ui
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    metrics = [client.get_run(r).data.metrics for r in run_ids]
    assert set(metrics[0]) == set(metrics[1]) == set(metrics[2])  # every row has 3 values
    assert all(math.isfinite(v) for m in metrics for v in m.values())
    base = link.split("/#/")[0]
    experiment_id = client.get_run(run_ids[0]).info.experiment_id
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    runs = json.dumps(run_ids, separators=(",", ":"))
    page.goto(
        f'{base}/#/compare-runs?runs={runs}&experiments=["{experiment_id}"]',
        wait_until="domcontentloaded",
    )
    first = page.get_by_text("best.click_rate").first
    first.wait_for(timeout=90_000)
    # The metrics table is a scroll box that renders the rows in view: scroll it, reading each.
    seen = first.evaluate(SCROLL_AND_READ)
    assert seen != "no scroll box"
    for name in ("decision.rel_lift", "control.click_rate", "best.click_rate", "srm_p_value"):
        assert name in seen, name
    assert "NaN" not in seen
    body = seen + page.inner_text("body")
    assert "personal.click_rate" not in body  # per-variant figures are tables, not metrics
    page.screenshot(path=str(ARTIFACTS / "mlflow-compare-3-iterations.png"), full_page=True)
    page.close()
