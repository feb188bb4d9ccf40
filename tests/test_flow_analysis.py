"""Flow tests judged from entry: the three examples decide their simulated truth; censoring,
versions, quarantine, funnel and the next spec."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopexp.analysis.flow import analyze_flow_files, conversion_curves
from loopexp.analysis.results import Status
from loopexp.design.spec import load_spec
from loopexp.learn.iteration import next_spec
from loopexp.sim.flow_demo import DEMO_ENTRY_DAYS
from loopexp.sim.flows import DEMO_FLOW_TRUTHS, EXPECTED_FLOW_DECISIONS, simulate_flow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["welcome_flow_timing.yaml", "winback_cadence.yaml", "cart_reminder_holdout.yaml"]


def _spec(name: str = "welcome_flow_timing.yaml"):
    return load_spec(ROOT / "experiments" / name)


@pytest.fixture(scope="module")
def welcome():
    spec = _spec()
    return spec, simulate_flow(spec, DEMO_FLOW_TRUTHS["welcome"], 8000, 14, seed=5)


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_decides_its_simulated_truth(name: str, tmp_path: Path) -> None:
    """As ``loopexp demo --spec`` simulates it (60,000 entries, seed 7, read when all closed)."""
    spec = _spec(name)
    flow_id = spec.flow.id
    sim = simulate_flow(spec, DEMO_FLOW_TRUTHS[flow_id], 60_000, DEMO_ENTRY_DAYS, seed=7)
    look = sim.as_of(DEMO_ENTRY_DAYS + spec.flow.conversion.window_days)
    analysis = analyze_flow_files(spec, *look.write(tmp_path))
    d = analysis.results.decision
    assert (d.status.value, d.winner) == EXPECTED_FLOW_DECISIONS[flow_id], d.reasons


def test_an_early_look_is_keep_testing_not_no_difference(welcome, tmp_path: Path) -> None:
    spec, sim = welcome
    analysis = analyze_flow_files(spec, *sim.as_of(3).write(tmp_path))
    results = analysis.results
    assert results.decision.status == Status.KEEP_TESTING
    assert "followed for the full 7 days" in results.not_compared[0].reason
    assert (analysis.arms["matured"] == 0).all()


def test_censored_recipients_are_not_zeros(welcome, tmp_path: Path) -> None:
    spec, sim = welcome
    analysis = analyze_flow_files(spec, *sim.as_of(12).write(tmp_path))
    arms = analysis.arms.set_index("arm")
    truth = DEMO_FLOW_TRUTHS["welcome"]
    for arm in ("wait_1d", "wait_3d"):
        so_far, km = arms.loc[arm, "so_far_rate"], arms.loc[arm, "km_rate"]
        assert so_far < km  # the naive count treats the recent entrants as non-converters
        assert arms.loc[arm, "km_low"] < truth.rate(arm) < arms.loc[arm, "km_high"]
    variant = analysis.results.variants[1]
    assert variant.metrics["conversion_rate"].value == pytest.approx(arms.loc["wait_3d", "km_rate"])
    assert {"matured_conversion_rate", "conversions_so_far", "messages_per_recipient"} <= set(
        variant.metrics
    )
    curves = conversion_curves(analysis, 7.0)
    assert set(curves["arm"]) == {"wait_1d", "wait_3d"} and curves["converted"].max() < 0.2


def test_funnel_per_arm_and_step(welcome, tmp_path: Path) -> None:
    spec, sim = welcome
    funnel = analyze_flow_files(spec, *sim.as_of(30).write(tmp_path)).funnel
    steps = funnel.set_index(["variant_id", "step_id"])
    assert set(steps.index) == {
        (a, s) for a in ("wait_1d", "wait_3d") for s in ("welcome_mail", "second_mail")
    }
    for arm in ("wait_1d", "wait_3d"):
        first, second = steps.loc[(arm, "welcome_mail")], steps.loc[(arm, "second_mail")]
        assert first["send"] >= second["send"] > 0  # those who ordered get no second mail
        assert first["send"] >= first["open"] >= first["click"]


def test_other_flow_versions_are_not_pooled(welcome, tmp_path: Path) -> None:
    spec, sim = welcome
    events, assignment = sim.as_of(30).write(tmp_path)
    frame = pd.read_parquet(assignment)
    frame.loc[:999, "flow_version"] = "0123456789ab"
    frame.to_parquet(assignment, index=False)
    analysis = analyze_flow_files(spec, events, assignment)
    assert analysis.other_versions == 1000
    assert analysis.results.data.recipients == len(frame) - 1000
    assert "not pooled" in analysis.results.decision.reasons[-1]
    declared = spec.model_copy(
        update={"flow": spec.flow.model_copy(update={"compatible_with": ["0123456789ab"]})}
    )
    assert analyze_flow_files(declared, events, assignment).other_versions == 0


def test_malformed_events_are_quarantined_and_counted(welcome, tmp_path: Path) -> None:
    spec, sim = welcome
    look = sim.as_of(30)
    bad = look.events.iloc[:3].copy()
    bad["event_type"] = "teleport"
    bad["event_id"] = ["bad-1", "bad-2", "bad-3"]
    look.events = pd.concat([look.events, bad], ignore_index=True)
    quarantine = tmp_path / "quarantine.parquet"
    data = analyze_flow_files(spec, *look.write(tmp_path), quarantine).results.data
    assert data.quarantined == 3 and sum(data.quarantine_reasons.values()) == 3
    assert len(pd.read_parquet(quarantine)) == 3


def test_next_spec_adopts_the_winning_branch_and_draws_the_backlog(welcome, tmp_path) -> None:
    spec, sim = welcome
    results = analyze_flow_files(spec, *sim.as_of(30).write(tmp_path)).results
    assert results.decision.status == Status.SHIP and results.decision.winner == "wait_3d"
    nxt = next_spec(spec, results)
    assert nxt.control == "wait_3d" and [v.id for v in nxt.variants] == ["wait_3d", "wait_5d"]
    split = nxt.flow.split_node.split
    assert [(b.id, b.next) for b in split] == [("wait_3d", "wait_3"), ("wait_5d", "wait_5")]
    assert "wait_1" not in {s.id for s in nxt.flow.steps}  # the retired arm's wait is dropped
    assert nxt.flow.backlog == [] and nxt.flow.version() != spec.flow.version()
