"""Send time: randomised slots, analysis per slot x segment, windows in the next spec."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopexp.analysis.results import Decision, ExperimentResults, Status
from loopexp.design.parts import SendTimeSettings
from loopexp.design.spec import ExperimentSpec, load_spec, parse_spec
from loopexp.learn.iteration import next_spec
from loopexp.learn.sendtime import (
    SendTimeError,
    analyze_send_time,
    local_send_times,
    next_send_time,
    send_slots,
    send_time_from_files,
)
from loopexp.learn.sendtime_check import planned_per_slot, recommendation_accuracy
from loopexp.sim.simulate import SEGMENT_PROFILES, TrueEffects, simulate_campaign
from tests.conftest import DEMO_SPEC

SLOTS = ["07:00", "12:00", "19:00"]
#: The best slot differs by segment: prospects read in the evening, customers in the morning,
#: inactive recipients at lunch; the best slot lifts opens by 25 %.
SLOT_EFFECTS = {
    "prospect": {"07:00": 1.0, "12:00": 1.0, "19:00": 1.25},
    "new_customer": {"07:00": 1.25, "12:00": 1.0, "19:00": 1.0},
    "existing_customer": {"07:00": 1.25, "12:00": 1.0, "19:00": 1.0},
    "inactive": {"07:00": 1.0, "12:00": 1.25, "19:00": 1.0},
}
TRUE_BEST = {seg: max(s, key=s.__getitem__) for seg, s in SLOT_EFFECTS.items()}


def _spec(**send_time) -> ExperimentSpec:
    data = load_spec(DEMO_SPEC).model_dump(mode="json")
    data["send_time"] = {"slots": SLOTS, **send_time}
    return ExperimentSpec.model_validate(data)


def test_slots_are_randomised_evenly_and_independently_of_the_variant() -> None:
    spec = _spec()
    frame = pd.DataFrame(
        {
            "recipient_key": [f"k{i}" for i in range(30_000)],
            "segment": "prospect",
            "variant_id": np.array(["control", "personal", "urgency"])[np.arange(30_000) % 3],
        }
    )
    slots = send_slots(frame, spec)
    assert slots["explore"].all()
    table = pd.crosstab(slots["variant_id"], slots["slot"])
    # each variant x slot cell holds ~1/9 of the recipients (binomial sd ≈ 54)
    assert (abs(table.to_numpy() - 30_000 / 9) < 300).all()
    # deterministic: the same salt gives the same slots
    assert send_slots(frame, spec)["slot"].equals(slots["slot"])


def test_learned_windows_keep_a_randomised_share() -> None:
    spec = _spec(windows={"prospect": "19:00"}, explore_share=0.1)
    frame = pd.DataFrame(
        {
            "recipient_key": [f"k{i}" for i in range(20_000)],
            "segment": ["prospect", "inactive"] * 10_000,
            "variant_id": "control",
        }
    )
    slots = send_slots(frame, spec)
    assert abs(slots["explore"].mean() - 0.1) < 0.01
    fixed = slots[~slots["explore"]]
    assert set(fixed.loc[fixed["segment"] == "prospect", "slot"]) == {"19:00"}
    assert set(fixed.loc[fixed["segment"] == "inactive", "slot"]) == {"07:00"}  # first slot
    assert set(slots.loc[slots["explore"], "slot"]) == set(SLOTS)


def test_window_must_be_one_of_the_slots() -> None:
    with pytest.raises(ValueError, match=r"not in send_time\.slots"):
        _spec(windows={"prospect": "20:00"})


def test_local_send_time_follows_the_recipient_timezone() -> None:
    slots = pd.DataFrame({"slot": ["07:00", "07:00", "07:00", None]})
    tz = pd.Series(["Europe/Berlin", "America/New_York", "Not/AZone", None])
    utc = local_send_times(slots, date(2026, 3, 2), tz, default_timezone="UTC")
    assert [t.hour if pd.notna(t) else None for t in utc] == [6, 12, 7, None]


def test_recommendation_finds_the_true_best_slot_per_segment_at_the_planned_size() -> None:
    # The check: >= 80 % of simulated campaigns find every segment's true best slot when
    # each segment gets the planned sample (powered for the true 25 % open lift on clicks).
    rates, n = {}, {}
    for segment, profile in SEGMENT_PROFILES.items():
        base = profile.open * profile.click_given_open
        rates[segment.value] = {s: base * m for s, m in SLOT_EFFECTS[segment.value].items()}
        n[segment.value] = planned_per_slot(base, 0.25, len(SLOTS))
    accuracy = recommendation_accuracy(rates, n, simulations=100, seed=3)
    assert accuracy["__all__"] >= 0.8, accuracy
    # and at a tenth of the planned size it is clearly worse: the check measures something
    small = {seg: max(k // 10, 1) for seg, k in n.items()}
    assert recommendation_accuracy(rates, small, simulations=100, seed=3)["__all__"] < 0.8


def test_per_segment_comparisons_use_holm_and_matching_intervals() -> None:
    counts = pd.DataFrame(
        [
            ("prospect", "07:00", 5000, 250),
            ("prospect", "12:00", 5000, 260),
            ("prospect", "19:00", 5000, 340),
            ("inactive", "07:00", 5000, 100),
            ("inactive", "12:00", 5000, 105),
            ("inactive", "19:00", 5000, 98),
        ],
        columns=["segment", "slot", "n", "successes"],
    )
    analysis = analyze_send_time(counts, SLOTS, "click_rate")
    compared = [r for r in analysis.results if r.p_value is not None]
    assert len(compared) == 4  # two slots vs the reference in each of two segments
    assert all(r.p_value_adjusted >= r.p_value for r in compared)
    evening = next(r for r in compared if (r.segment, r.slot) == ("prospect", "19:00"))
    assert evening.p_value_adjusted < 0.05 and evening.rel_ci_low > 0
    assert evening.ci_level > 0.95  # Holm's step-down level for the smallest p-value
    windows = {w.segment: w for w in analysis.windows}
    assert windows["prospect"].slot == "19:00" and windows["prospect"].confident
    assert not windows["inactive"].confident  # no slot is shown better than 07:00 there
    # a rate and interval for every cell
    assert all(r.ci_low <= r.rate <= r.ci_high for r in analysis.results)


def test_a_segment_without_data_gets_no_window_and_keeps_the_current_one() -> None:
    counts = pd.DataFrame(
        [("prospect", "07:00", 0, 0), ("prospect", "12:00", 0, 0), ("prospect", "19:00", 0, 0)],
        columns=["segment", "slot", "n", "successes"],
    )
    analysis = analyze_send_time(counts, SLOTS, "click_rate")
    assert analysis.recommended() == {}
    spec = _spec(windows={"prospect": "12:00"}, explore_share=0.1)
    assert next_send_time(spec, analysis).windows == {"prospect": "12:00"}


def test_mean_metric_is_refused() -> None:
    with pytest.raises(SendTimeError, match="proportion"):
        analyze_send_time(
            pd.DataFrame(columns=["segment", "slot", "n", "successes"]),
            SLOTS,
            "revenue_per_delivered",
        )


def test_simulated_campaign_end_to_end_recommends_and_next_spec_adopts(tmp_path: Path) -> None:
    spec = _spec()
    effects = TrueEffects(slot_open=SLOT_EFFECTS)
    campaign = simulate_campaign(spec, 60_000, effects, seed=11)
    # each recipient is mailed at their slot: the send event carries it
    sends = campaign.events[campaign.events["event_type"] == "send"].merge(
        campaign.assignment[["recipient_key"]], on="recipient_key"
    )
    assert set(sends["ts"].dt.strftime("%H:%M")) == set(SLOTS)
    events, assignment = campaign.write(tmp_path)
    # open_rate carries the slot effect most directly
    spec_open = ExperimentSpec.model_validate(
        {**spec.model_dump(mode="json"), "primary_metric": "open_rate"}
    )
    analysis = send_time_from_files(events, assignment, spec_open)
    assert analysis.recommended() == TRUE_BEST
    results = _decided(spec_open)
    nxt = next_spec(spec_open, results, send_time=next_send_time(spec_open, analysis))
    assert nxt.send_time is not None
    assert nxt.send_time.windows == {k: v for k, v in TRUE_BEST.items()}
    assert nxt.send_time.explore_share == 0.1
    text = nxt.to_yaml()
    assert "windows:" in text and "explore_share: 0.1" in text
    assert parse_spec(text).send_time == nxt.send_time


def test_send_time_test_type_uses_the_variant_slots(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC.parent / "send_time_demo.yaml")
    campaign = simulate_campaign(spec, 6_000, TrueEffects(), seed=2)
    slots = send_slots(campaign.assignment, spec)
    by_variant = {v.id: v.send_time for v in spec.variants}
    assert (slots["slot"] == slots["variant_id"].map(by_variant)).all()
    events, assignment = campaign.write(tmp_path)
    analysis = send_time_from_files(events, assignment, spec)
    assert {r.reference for r in analysis.results} == {"07:30"}  # the control's slot


def test_spec_without_send_time_keeps_its_fingerprint() -> None:
    spec = load_spec(DEMO_SPEC)
    assert "send_time" not in spec.to_yaml().split("variants:")[0]
    with_slots = _spec()
    assert with_slots.sha256() != spec.sha256()
    assert isinstance(with_slots.send_time, SendTimeSettings)


def _decided(spec: ExperimentSpec) -> ExperimentResults:
    """A minimal no-difference result for ``spec`` (the next spec only reads the decision)."""
    from loopexp.analysis.results import DataInfo, ExperimentInfo, SRMResult

    return ExperimentResults(
        experiment=ExperimentInfo.from_spec(spec),
        data=DataInfo(source="", fingerprint="", recipients=0, events=0, quarantined=0),
        srm=SRMResult(p_value=1.0, ok=True, expected={}, observed={}),
        variants=[],
        comparisons=[],
        decision=Decision(
            status=Status.NO_DIFFERENCE,
            winner=None,
            primary_metric=spec.primary_metric,
            reasons=["flat"],
        ),
    )


@pytest.mark.integration
def test_send_time_notebook_runs_under_papermill_and_writes_json(tmp_path: Path) -> None:
    import json

    import nbformat

    from loopexp.run.notebook import execute
    from loopexp.sim.demo import DEMO_BEST_SLOTS
    from tests.conftest import ROOT

    result = tmp_path / "out" / "send_time.json"
    executed = execute(
        ROOT / "notebooks" / "send_time.ipynb",
        tmp_path / "send_time.ipynb",
        {"recipients": 30_000, "result_path": str(result), "figures_dir": str(tmp_path / "fig")},
        cwd=tmp_path,
    )
    analysis = json.loads(result.read_text())
    windows = {w["segment"]: w["slot"] for w in analysis["windows"]}
    assert windows == DEMO_BEST_SLOTS
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "explore_share: 0.1" in text and "windows:" in text


_keys = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=60, unique=True)


@settings(max_examples=60, deadline=None)
@given(keys=_keys, share=st.floats(0, 1), segment=st.sampled_from(["prospect", "inactive"]))
def test_slot_of_a_recipient_depends_on_its_key_only(keys, share, segment) -> None:
    """Property: every mailed recipient gets one of the slots, the same one whoever else is on
    the list (so re-sending a part of the list keeps everyone's slot)."""
    spec = _spec(windows={"prospect": "19:00"}, explore_share=share)
    frame = pd.DataFrame({"recipient_key": keys, "segment": segment, "variant_id": "control"})
    full = send_slots(frame, spec).set_index("recipient_key")
    assert set(full["slot"]) <= set(SLOTS)
    half = send_slots(frame.iloc[::2], spec).set_index("recipient_key")
    assert half["slot"].equals(full.loc[half.index, "slot"])
    assert half["explore"].equals(full.loc[half.index, "explore"])
    if share == 0:
        assert set(full["slot"]) == {"19:00" if segment == "prospect" else "07:00"}
