"""Data that belong to the send (issue 28): a guardrail whose events are absent is not a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import ExperimentResults, Status
from loopexp.cli import app
from loopexp.sim.simulate import DEMO_EFFECTS
from loopexp.track.describe import summary_line
from tests.conftest import DEMO_SPEC


@pytest.fixture(scope="module")
def send(tmp_path_factory: pytest.TempPathFactory):
    """The demo send (a true winner, personal), and the same send exported without unsubscribes."""
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 20_000, DEMO_EFFECTS, seed=7)
    folder = tmp_path_factory.mktemp("scope")
    full = campaign.write(folder / "full")
    campaign.events = campaign.events[campaign.events["event_type"] != "unsubscribe"]
    return spec, full, campaign.write(folder / "no-unsubscribes")


def test_a_guardrail_without_events_says_no_data_and_is_not_a_pass(send) -> None:
    spec, full, lacking = send
    _, res = analyze_files(spec, *full)
    assert res.decision.status == Status.SHIP  # with its unsubscribes the send ships personal
    assert not any(g.no_data for g in res.decision.guardrails)
    _, res = analyze_files(spec, *lacking)
    d = res.decision
    assert d.status == Status.KEEP_TESTING and d.winner is None
    gone = [g for g in d.guardrails if g.metric == "unsubscribe_rate"]
    assert gone and all(g.no_data and not g.passed for g in gone)
    assert any("no data" in r and "unsubscribe" in r for r in d.reasons)
    assert "not a pass" in " ".join(d.reasons)
    assert set(res.guardrails_frame()["verdict"]) == {"NO DATA"}
    line = summary_line(res, spec)
    assert "no data on guardrails unsubscribe_rate" in line and "guardrails ok" not in line


def test_no_data_round_trips_through_results_json(send, tmp_path: Path) -> None:
    spec, _, lacking = send
    _, res = analyze_files(spec, *lacking)
    back = ExperimentResults.read_json(res.write_json(tmp_path / "results.json"))
    assert [g.no_data for g in back.decision.guardrails] == [True, True]
    assert all(g.note and "unsubscribe" in g.note for g in back.decision.guardrails)


# --- `ingest --assignment`: the share of events that belong to the test ----------------------


def _another_list(events: Path, path: Path) -> Path:
    """The same mailing's events as if sent to another list: other recipients and event ids."""
    other = pd.read_parquet(events)
    other["recipient_key"] = "other-" + other["recipient_key"]
    other["event_id"] = "other-" + other["event_id"]
    other.to_parquet(path)
    return path


def test_ingest_reports_the_share_of_events_on_the_assignment(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC)
    ours, our_assignment = simulate_campaign(spec, 1_000, seed=5).write(tmp_path / "ours")
    theirs = _another_list(ours, tmp_path / "theirs.parquet")
    both = [str(ours), str(theirs)]
    args = ["ingest", *both, "--format", "canonical", "--out", str(tmp_path / "out")]
    args += ["--assignment", str(our_assignment), "--json", "--demo-key"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    n_ours = len(pd.read_parquet(ours))
    assert summary["assignment_matched"] == n_ours
    assert summary["assignment_match_share"] == pytest.approx(n_ours / summary["events"])
    assert 0.3 < summary["assignment_match_share"] < 0.7


def test_ingest_with_no_event_on_the_assignment_is_an_error(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC)
    ours, our_assignment = simulate_campaign(spec, 1_000, seed=5).write(tmp_path / "ours")
    theirs = _another_list(ours, tmp_path / "theirs.parquet")
    args = ["ingest", str(theirs), "--format", "canonical", "--out", str(tmp_path / "out")]
    args += ["--assignment", str(our_assignment), "--demo-key"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "none of the" in result.output and "hashed with another key" in result.output
