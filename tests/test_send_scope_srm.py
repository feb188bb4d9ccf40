"""Sample ratio over time (issue 28): a split broken on one day invalidates the run, naming it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import Status
from loopexp.sim.simulate import write_events
from loopexp.stats.srm import srm_by_period, srm_check
from tests.conftest import DEMO_SPEC


def test_srm_by_period_checks_each_day_at_alpha_over_the_days() -> None:
    counts = {"d1": {"a": 500, "b": 500}, "d2": {"a": 560, "b": 440}, "tiny": {"a": 3, "b": 1}}
    checks = dict(srm_by_period(counts, {"a": 0.5, "b": 0.5}, alpha=0.01))
    assert set(checks) == {"d1", "d2"}  # too small for the chi-square approximation: left out
    direct = srm_check(counts["d2"], {"a": 0.5, "b": 0.5}, 0.005)
    assert checks["d2"].p_value == direct.p_value and checks["d2"].ok == direct.ok


def test_a_split_broken_on_day_3_invalidates_the_run_naming_the_day(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC).model_copy(
        update={"enrolment": "continuous", "planned_recipients_per_variant": 3_000}
    )
    spec = spec.model_copy(
        update={"decision": spec.decision.model_copy(update={"method": "sequential"})}
    )
    campaign = simulate_campaign(spec, 9_000, seed=2, enrolment_days=7)
    events, assignment = campaign.write(tmp_path / "sound")
    _, sound = analyze_files(spec, events, assignment)
    assert sound.srm.ok and len(sound.srm_by_period) >= 5
    assert all(p.ok for p in sound.srm_by_period)
    assert sound.decision.status != Status.INVALID_SRM
    # Day 3 sent a third of personal's recipients as control, day 5 the reverse: the totals
    # balance, the days do not.
    broken = pd.read_parquet(assignment)
    day = broken["enrolled_at"].dt.strftime("%Y-%m-%d")
    days = sorted(day.unique())
    rng = np.random.default_rng(0)
    for when, src, dst in ((days[2], "personal", "control"), (days[4], "control", "personal")):
        rows = broken.index[(day == when) & (broken["variant_id"] == src)]
        moved = rng.choice(rows, len(rows) // 3, replace=False)
        broken.loc[moved, "variant_id"] = dst
    broken.to_parquet(tmp_path / "broken.parquet")
    _, res = analyze_files(spec, events, tmp_path / "broken.parquet")
    assert res.srm.ok  # the totals hide it
    assert res.decision.status == Status.INVALID_SRM
    assert any(days[2] in r for r in res.decision.reasons)
    failed = {p.period for p in res.srm_by_period if not p.ok}
    assert days[2] in failed


def in_batches(events: pd.DataFrame, batches: int) -> tuple[pd.DataFrame, pd.Series]:
    """Each recipient's events moved by 0..batches-1 hours (a send in hourly batches)."""
    keys = pd.Series(events["recipient_key"].unique())
    batch = pd.Series(np.random.default_rng(3).integers(0, batches, len(keys)), index=keys)
    moved = events.assign(
        ts=events["ts"] + pd.to_timedelta(batch[events["recipient_key"]].to_numpy(), unit="h")
    )
    return moved, batch


def test_a_send_broken_in_batch_3_invalidates_the_run_naming_the_batch(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC)  # a one-off send
    campaign = simulate_campaign(spec, 6_000, seed=5)
    events, batch = in_batches(campaign.events, 5)
    sound_path = write_events(events, tmp_path / "events.parquet")
    assignment = tmp_path / "assignment.parquet"
    campaign.assignment.to_parquet(assignment, index=False)
    table, sound = analyze_files(
        spec, sound_path, assignment, as_of=datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert len(table.sent_by_batch) == 5
    assert sum(sum(v.values()) for v in table.sent_by_batch.values()) == 6_000
    batches = [p for p in sound.srm_by_period if p.kind == "send_batch"]
    assert len(batches) == 5 and all(p.ok for p in batches)
    assert sound.decision.status != Status.INVALID_SRM
    # The ESP's batch 3 failed for a third of personal's recipients, batch 5 for a third of
    # control's: the totals balance, the batches do not.
    variant = campaign.assignment.set_index("recipient_key")["variant_id"]
    lost = []
    for b, arm in ((2, "personal"), (4, "control")):
        keys = batch.index[(batch == b).to_numpy() & (variant[batch.index] == arm).to_numpy()]
        lost += list(keys[: len(keys) // 3])
    broken = write_events(events[~events["recipient_key"].isin(lost)], tmp_path / "broken.parquet")
    _, res = analyze_files(spec, broken, assignment, as_of=datetime(2026, 4, 1, tzinfo=UTC))
    assert res.srm.ok and (res.delivery_srm is None or res.delivery_srm.ok)  # totals hide it
    assert res.decision.status == Status.INVALID_SRM
    third = (campaign.events["ts"].min() + pd.Timedelta(hours=2)).strftime("%Y-%m-%d %H:00 UTC")
    failed = [p.period for p in res.srm_by_period if not p.ok]
    assert third in failed
    assert any(f"send batch of {third}" in r for r in res.decision.reasons)
    # a continuous flow is checked per day of enrolment, not per send hour
    flow = spec.model_copy(update={"enrolment": "continuous"})
    assert all(p.kind == "day" for p in analyze_files(flow, broken, assignment)[1].srm_by_period)
