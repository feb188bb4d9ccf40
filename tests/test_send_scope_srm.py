"""Sample ratio over time (issue 28): a split broken on one day invalidates the run, naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import Status
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
