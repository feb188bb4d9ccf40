"""Data that belong to the send (issue 28): a guardrail whose events are absent is not a pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import ExperimentResults, Status
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
