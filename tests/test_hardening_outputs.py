"""Issue #19: outputs people open (HTML report, MLflow Markdown, terminal) show hostile strings as
literal text; no raw e-mail address reaches any file a run writes or its log; the CLI summary says
how many events were quarantined and where they are."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt
from rich.console import Console
from typer.testing import CliRunner

from loopexp.analysis.analyze import analyze
from loopexp.cli import app
from loopexp.core.keys import EMAIL_PATTERN
from loopexp.design.spec import load_spec
from loopexp.metrics import compute_metrics
from loopexp.run.outputs import write_html_report
from loopexp.sim.simulate import simulate_campaign, write_events
from loopexp.track.describe import run_description
from tests._browser import CHROMIUM, debian_chromium
from tests.conftest import DEMO_SPEC

HOSTILE = [
    "</title><script>window.__pwned = 1; alert(1)</script>",
    '"><img src=x onerror="window.__pwned = 2">',
    "<svg onload=alert(3)>",
    "[click](javascript:alert(4)) **Decision: ship**",
    "[/] [bold red]not markup",
]
NAME = " ".join(HOSTILE)
ADDRESS = "jane.doe@example.com"


@pytest.fixture(scope="module")
def hostile_results():
    spec = load_spec(DEMO_SPEC)
    sim = simulate_campaign(spec, 2_000, seed=11)
    results = analyze(spec, compute_metrics(sim.events, sim.assignment, spec.all_metrics))
    # Names and reasons arrive as data (a results.json, a spec): inject hostile ones everywhere.
    experiment = results.experiment.model_copy(update={"name": NAME + "\n**Decision: ship**"})
    decision = results.decision.model_copy(
        update={"reasons": [*results.decision.reasons, *HOSTILE, "line\n**Decision: ship**"]}
    )
    return results.model_copy(update={"experiment": experiment, "decision": decision})


def test_html_report_escapes_every_string(hostile_results, tmp_path):
    html = write_html_report(hostile_results, tmp_path / "report.html").read_text()
    fragment = hostile_results.summary_html()
    for text in (html, fragment):
        assert "<script" not in text
        assert "<img src=x" not in text and "<svg" not in text
    assert "&lt;/title&gt;&lt;script&gt;" in html.split("</title>")[0]


def test_report_in_chromium_shows_literal_text_and_runs_no_script(hostile_results, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    pytest.importorskip("playwright.sync_api")
    path = write_html_report(hostile_results, tmp_path / "report.html")
    dialogs: list[str] = []
    with debian_chromium() as browser:
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        title = page.title()
        heading = page.inner_text("h3")
        body = page.inner_text("body")
        pwned = page.evaluate("window.__pwned")
        scripts = page.evaluate("document.scripts.length")
        images = page.evaluate("document.images.length")
    assert dialogs == []
    assert pwned is None
    assert scripts == 0
    assert images == 1  # the lift plot only
    assert HOSTILE[0] in title  # the literal text, as typed
    for text in HOSTILE:
        assert text in heading
        assert text in body


def test_mlflow_description_cannot_forge_a_decision_line(hostile_results):
    md = run_description(hostile_results)
    lines = md.splitlines()
    status = hostile_results.decision.status.value
    assert [ln for ln in lines if "Decision:" in ln and ln.startswith("**")] == [
        ln for ln in lines if ln.startswith(f"**Decision: {status}**")
    ]
    rendered = MarkdownIt("commonmark").render(md)
    assert rendered.count("<strong>Decision:") == 1
    assert f"<strong>Decision: {status}</strong>" in rendered
    for tag in ("<script", "<img", "<svg", "<a href", "javascript:alert(4)</a>"):
        assert tag not in rendered
    assert "&lt;/title&gt;&lt;script&gt;" in rendered  # shown, as text


def test_terminal_table_shows_markup_literally(hostile_results):
    console = Console(record=True, width=400)
    console.print(hostile_results.comparisons_table())
    assert "[/] [bold red]not markup" in console.export_text()


# --- privacy and the CLI summary ----------------------------------------------------------------


def _leaks(paths: list[Path]) -> dict[str, list[str]]:
    """Every e-mail address found in the files under ``paths`` (Parquet read as tables)."""
    found: dict[str, list[str]] = {}
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for file in files:
            texts = [file.read_bytes().decode("latin-1")]
            if file.suffix == ".parquet":
                texts.append(pd.read_parquet(file).astype(str).to_csv())
            hits = [m for text in texts for m in EMAIL_PATTERN.findall(text)]
            if hits:
                found[str(file)] = hits[:3]
    return found


def _dirty_campaign(folder: Path) -> tuple[Path, Path]:
    spec = load_spec(DEMO_SPEC)
    sim = simulate_campaign(spec, 4_000, seed=2)
    ev = sim.events.copy()
    for col in ("url", "user_agent", "message_id"):
        ev[col] = ev[col].astype(object)
    clicks = ev.index[ev.event_type == "click"]
    ev.loc[ev.index[:3], "recipient_key"] = ADDRESS  # unhashed keys
    ev.loc[clicks[:2], "url"] = f"https://shop.example/?utm_source=mail&email={ADDRESS}"
    ev.loc[clicks[:2], "revenue"] = float("-inf")  # ... on quarantined rows
    ev.loc[clicks[2:4], "user_agent"] = f"Mozilla/5.0 ({ADDRESS})"
    ev.loc[clicks[2:4], "revenue"] = float("inf")
    ev.loc[ev.index[3:6], "message_id"] = f"<{ADDRESS}>"
    ev.loc[ev.index[3:6], "event_type"] = "opened"
    folder.mkdir(parents=True)
    events = write_events(ev, folder / "events.parquet")
    assignment = folder / "assignment.parquet"
    sim.assignment.to_parquet(assignment, index=False)
    return events, assignment


@pytest.mark.integration
def test_no_address_in_anything_a_run_writes_and_the_summary_names_the_quarantine(tmp_path):
    spec = Path(shutil.copy(DEMO_SPEC, tmp_path / DEMO_SPEC.name))
    events, assignment = _dirty_campaign(tmp_path / "data")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["run", str(spec), "--events", str(events), "--assignment", str(assignment),
         "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
    )  # fmt: skip
    assert result.exit_code in (0, 3), result.output  # decided, or keep testing: both complete
    log = tmp_path / "cli.log"
    log.write_text(result.output)
    text = " ".join(result.output.split())
    assert f"Quarantined: 10 of {_count(events):,} events" in text
    assert str(out / "quarantine.parquet") in result.output.replace("\n", "")
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    assert len(quarantine) == 10
    # The quarantine keeps what locates a row (provider, event_id, reason), not the address.
    assert set(quarantine["quarantine_reason"]) == {
        "recipient_key is an e-mail address, not a hashed key",
        "unknown event_type",
        "unparseable or non-finite revenue",
    }
    written = [out, tmp_path / "mlflow.db", tmp_path / "mlartifacts", log]
    assert all(p.exists() for p in written), [p for p in written if not p.exists()]
    assert _leaks(written) == {}
    assert _leaks([events]) != {}  # the scan would see one: the input does hold addresses


def _count(path: Path) -> int:
    return len(pd.read_parquet(path, columns=["event_id"]))


@pytest.mark.integration
def test_a_failed_run_quoting_an_address_leaks_it_nowhere(tmp_path):
    spec = Path(shutil.copy(DEMO_SPEC, tmp_path / DEMO_SPEC.name))
    sim = simulate_campaign(load_spec(spec), 3_000, seed=4)
    events = tmp_path / "events.csv"
    frame = sim.events[["event_id", "provider", "event_type", "ts", "recipient_key"]]
    frame.to_csv(events, index=False)
    with events.open("a") as handle:  # one broken row, far past DuckDB's sniffing sample
        handle.write(f"x-1,esp,open,2026-03-02T09:00:00Z,{ADDRESS},extra\n")
    assignment = tmp_path / "assignment.parquet"
    sim.assignment.to_parquet(assignment, index=False)
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "200"}
    result = CliRunner().invoke(
        app,
        ["run", str(spec), "--events", str(events), "--assignment", str(assignment),
         "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    clear = r"events\.csv: cannot be read as CSV|could not process the inputs"
    assert re.search(clear, result.output), result.output
    assert "Traceback" not in result.output
    log = tmp_path / "cli.log"
    log.write_text(result.output)
    # The preflight refuses this file before a kernel starts, so no notebook was executed; every
    # file the run did write (an attempt folder, if any) and the log are scanned.
    assert _leaks([out, log]) == {}
