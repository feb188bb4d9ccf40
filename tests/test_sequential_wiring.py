"""The sequential method, the planned-sample gate, holdout incrementality and regression adjustment
wired through spec → engine → analyze → decide → results.json."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest

from loopexp import load_spec, simulate_campaign
from loopexp.analysis.analyze import analyze, analyze_files
from loopexp.analysis.results import ExperimentResults, Status
from loopexp.design.spec import SpecError, parse_spec
from loopexp.metrics.engine import ALL_SEGMENTS, EventsError, GroupStats, MetricTable
from loopexp.sim.simulate import TrueEffects
from loopexp.stats.adjustment import Moments, regression_adjusted

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "experiments" / "subject_line_demo.yaml"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _spec(**update):
    data = load_spec(DEMO).model_dump(mode="json", exclude_none=True)
    data.update({"secondary_metrics": [], "guardrails": []})
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return type(load_spec(DEMO)).model_validate(data)


def _table(cells: dict[str, tuple[int, int]], metric: str = "click_rate") -> MetricTable:
    stats = [
        GroupStats(metric, v, ALL_SEGMENTS, n, float(x), float(x)) for v, (n, x) in cells.items()
    ]
    return MetricTable(stats, {v: n for v, (n, _) in cells.items()}, 0, 0)


# --- spec --------------------------------------------------------------------------------------


def test_continuous_enrolment_defaults_to_sequential():
    assert _spec().decision_method == "fixed"
    assert _spec(enrolment="continuous").decision_method == "sequential"
    assert _spec(decision={"method": "sequential"}).decision_method == "sequential"
    spec = _spec(enrolment="continuous", covariates=["pre_clicks", "pre_opens"])
    again = parse_spec(spec.to_yaml())
    assert again == spec and again.decision_method == "sequential"
    assert _spec(planned_recipients_per_variant=7000).sequential_tuning_n == 14_000


def test_continuous_fixed_without_a_plan_is_a_clear_error():
    text = DEMO.read_text() + "enrolment: continuous\n"
    text = text.replace("  correction: holm", "  correction: holm\n  method: fixed")
    with pytest.raises(SpecError, match="planned_recipients_per_variant"):
        parse_spec(text)


# --- analyze / decide --------------------------------------------------------------------------

CELLS = {"control": (20_000, 600), "personal": (20_000, 720), "urgency": (20_000, 610)}


def test_sequential_results_are_always_valid_and_wider():
    fixed = analyze(_spec(), _table(CELLS))
    seq = analyze(_spec(decision={"method": "sequential"}), _table(CELLS))
    assert seq.experiment.decision_method == "sequential"
    for f, s in zip(fixed.comparisons, seq.comparisons, strict=True):
        assert "always-valid" in s.method and "always-valid" not in f.method
        assert s.estimate == pytest.approx(f.estimate)
        assert s.p_value > f.p_value
        assert s.ci_high - s.ci_low > f.ci_high - f.ci_low
        # The interval at the adjusted test's level excludes 0 exactly when adjusted p < alpha.
        assert (s.ci_low > 0 or s.ci_high < 0) == (s.p_value_adjusted < 0.05)
    # Same Holm family: the adjusted p-values follow from the raw ones.
    assert seq.comparisons[0].family_size == 2


def test_analyze_uses_the_p_values_the_calibration_bench_simulates():
    """bench/sequential_calibration.py simulates always_valid_pvalues on z and n; analyze's
    sequential p-values must be that same function of the same table."""
    from loopexp.stats.sequential import always_valid_pvalues

    spec = _spec(decision={"method": "sequential"}, planned_recipients_per_variant=30_000)
    seq = analyze(spec, _table(CELLS))
    n_c, x_c = CELLS["control"]
    for c in seq.comparisons:
        n_t, x_t = CELLS[c.variant]
        p_t, p_c = x_t / n_t, x_c / n_c
        z = (p_t - p_c) / np.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
        expected = always_valid_pvalues(np.array([z]), np.array([n_t + n_c]), 60_000, 0.05)[0]
        assert c.p_value == pytest.approx(expected, rel=1e-12)


def test_welcome_flow_example_is_sequential_with_a_holdout():
    spec = load_spec(ROOT / "experiments" / "welcome_flow.yaml")
    assert spec.enrolment == "continuous" and spec.decision_method == "sequential"
    assert spec.audience.holdout > 0


def test_sequential_decision_names_the_confidence_sequence():
    seq = analyze(
        _spec(decision={"method": "sequential"}),
        _table({"control": (40_000, 1200), "personal": (40_000, 1500), "urgency": (40_000, 1190)}),
    )
    assert seq.decision.status == Status.SHIP and seq.decision.winner == "personal"
    assert "always-valid confidence sequence" in seq.decision.reasons[0]


def test_fixed_horizon_does_not_ship_before_the_planned_sample():
    """A clear winner at 20,000 of 50,000 planned recipients per variant: keep_testing, with the
    progress in the reason. (Before this gate the same table shipped 'personal'.)"""
    spec = _spec(planned_recipients_per_variant=50_000)
    early = analyze(spec, _table(CELLS))
    assert early.decision.status == Status.KEEP_TESTING
    assert "20,000 of 50,000 recipients" in early.decision.reasons[0]
    assert early.decision.recipients_per_variant == 20_000
    assert early.decision.planned_recipients_per_variant == 50_000
    on_time = analyze(_spec(planned_recipients_per_variant=20_000), _table(CELLS))
    assert on_time.decision.status == Status.SHIP
    # The sequential method may be read at any look, planned sample or not.
    seq = analyze(
        _spec(planned_recipients_per_variant=50_000, decision={"method": "sequential"}),
        _table({"control": (20_000, 600), "personal": (20_000, 800), "urgency": (20_000, 600)}),
    )
    assert seq.decision.status == Status.SHIP


# --- holdout incrementality through the engine -------------------------------------------------


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory):
    spec = _spec(
        audience={"holdout": 0.2},
        secondary_metrics=["conversion_rate", "revenue_per_delivered"],
    )
    sim = simulate_campaign(spec, 20_000, TrueEffects(open={"personal": 1.3}), seed=31)
    folder = tmp_path_factory.mktemp("holdout")
    events, assignment = sim.write(folder)
    _, results = analyze_files(spec, events, assignment)
    return spec, sim, results, folder


def test_incrementality_of_each_arm_and_all_mailed_against_holdout(holdout_run):
    _, sim, results, folder = holdout_run
    arms = [(r.metric, r.arm) for r in results.incrementality]
    for metric in ("conversion_per_assigned", "revenue_per_assigned"):
        assert [a for m, a in arms if m == metric] == [
            "control",
            "personal",
            "urgency",
            "all_mailed",
        ]
    # Intent to treat, recomputed by hand from the simulated events: revenue per assigned.
    assigned = sim.assignment
    orders = sim.events[sim.events["event_type"] == "order"]
    revenue = orders.groupby("recipient_key")["revenue"].sum()
    per_person = assigned.set_index("recipient_key").join(revenue).fillna({"revenue": 0.0})
    by_group = per_person.groupby("variant_id")["revenue"].mean()
    rev = {r.arm: r for r in results.incrementality if r.metric == "revenue_per_assigned"}
    assert rev["personal"].holdout_value == pytest.approx(by_group["holdout"])
    assert rev["personal"].arm_value == pytest.approx(by_group["personal"])
    assert rev["personal"].n_holdout == int((assigned["variant_id"] == "holdout").sum())
    r = rev["all_mailed"]
    assert r.incremental_total == pytest.approx(r.estimate * r.n_arm)
    assert r.incremental_ci_low < r.incremental_total < r.incremental_ci_high
    # Holdout recipients are in no A/B denominator (still), only in the per-assigned ones.
    assert {v.id for v in results.variants} == {"control", "personal", "urgency"}
    # The contract: results.json round-trips with the new records.
    path = results.write_json(folder / "results.json")
    assert ExperimentResults.read_json(path).incrementality == results.incrementality
    frame = results.incrementality_frame()
    assert list(frame["arm"]).count("all_mailed") == 2 and "incremental_total" in frame


def test_no_holdout_no_incrementality():
    res = analyze(_spec(), _table(CELLS))
    assert res.incrementality == []


# --- regression adjustment in analyze -----------------------------------------------------------


def _moments_in_duckdb(sim, metric_outcome: str, covariates: list[str]) -> dict:
    """Per-arm moments of the delivered recipients' human clicks on the covariates, in SQL."""
    k = len(covariates)
    with duckdb.connect() as con:
        con.register("ev", sim.events)
        con.register("a", sim.assignment)
        con.register("cov", sim.covariates)
        cols = ["count(*)", "sum(y)", "sum(y * y)"]
        cols += [f"sum({c})::DOUBLE" for c in covariates]
        cols += [f"sum({a}::DOUBLE * {b})" for a in covariates for b in covariates]
        cols += [f"sum({c}::DOUBLE * y)" for c in covariates]
        rows = con.execute(
            f"""
            WITH per AS (
                SELECT recipient_key,
                    bool_or(event_type = 'delivered') AS delivered,
                    bool_or(event_type = 'click' AND is_bot_click IS NOT TRUE)::DOUBLE AS y
                FROM ev GROUP BY recipient_key)
            SELECT a.variant_id, {", ".join(cols)}
            FROM a JOIN per USING (recipient_key) JOIN cov USING (recipient_key)
            WHERE per.delivered GROUP BY a.variant_id"""
        ).fetchall()
    return {
        (metric_outcome, r[0]): Moments.from_sums(
            r[1], r[2], r[3], r[4 : 4 + k], r[4 + k : 4 + k + k * k], r[4 + k + k * k :]
        )
        for r in rows
    }


def test_covariates_adjust_the_comparisons_and_narrow_them():
    covs = ["pre_clicks", "pre_opens"]
    spec = _spec(covariates=covs)
    sim = simulate_campaign(spec, 24_000, seed=8, pre_period_days=90)
    moments = _moments_in_duckdb(sim, "click_rate", covs)
    table = MetricTable(
        [
            GroupStats("click_rate", v, ALL_SEGMENTS, m.n, m.sum_y, m.sum_y2)
            for (_, v), m in moments.items()
        ],
        dict(sim.assignment["variant_id"].value_counts()),
        0,
        0,
    )
    plain = analyze(_spec(), table)
    adjusted = analyze(spec, table, covariate_moments=moments)
    c = adjusted.comparison("click_rate", "personal")
    assert c.covariates == covs and c.ci_narrowing > 0.1
    ref = regression_adjusted(
        moments[("click_rate", "personal")], moments[("click_rate", "control")]
    )
    assert c.estimate == pytest.approx(ref.effect.estimate, rel=1e-12)
    p = plain.comparison("click_rate", "personal")
    assert (c.ci_high - c.ci_low) < (p.ci_high - p.ci_low)
    assert p.covariates is None
    # Declared but not supplied: unadjusted, as before.
    assert analyze(spec, table).comparison("click_rate", "personal").covariates is None


# --- daily looks of a continuous flow -----------------------------------------------------------


def test_daily_looks_of_a_flow_through_the_engine(tmp_path):
    """A flow with a strong true effect, analysed on the cumulative data of daily looks with the
    sequential method: no ship on the first look's few recipients, a ship by the last look, and
    every look's result is a valid results.json."""
    spec = _spec(enrolment="continuous", planned_recipients_per_variant=6000)
    effects = TrueEffects(open={"personal": 1.6}, click_given_open={"personal": 1.3})
    flow = simulate_campaign(spec, 18_000, effects, seed=2, send_at=START, enrolment_days=7)
    statuses = []
    for day in (1, 3, 5, 8):
        look = flow.as_of(START + timedelta(days=day))
        events, assignment = look.write(tmp_path / f"day{day}")
        _, res = analyze_files(spec, events, assignment)
        assert res.experiment.decision_method == "sequential"
        statuses.append(res.decision.status)
    assert statuses[0] != Status.SHIP
    assert statuses[-1] == Status.SHIP
    assert np.all([s in {Status.SHIP, Status.KEEP_TESTING} for s in statuses])


def test_engine_covariate_sums_drive_the_adjustment(tmp_path):
    """analyze_files with spec.covariates: the compiled query returns the covariate sums (columns
    of the assignment) and analyze adjusts from them; the same comparison as from i15's own SQL
    moments."""
    covs = ["pre_clicks", "pre_opens"]
    spec = _spec(covariates=covs, decision={"cap_percentile": None})
    sim = simulate_campaign(spec, 24_000, seed=8, pre_period_days=90)
    sim.events.to_parquet(tmp_path / "events.parquet")
    sim.assignment.merge(sim.covariates, on="recipient_key").to_parquet(tmp_path / "a.parquet")
    table, res = analyze_files(spec, tmp_path / "events.parquet", tmp_path / "a.parquet")
    c = res.comparison("click_rate", "personal")
    assert c.covariates == covs and c.ci_narrowing > 0.1
    ref_moments = _moments_in_duckdb(sim, "click_rate", covs)
    ref = analyze(spec, table, covariate_moments=ref_moments).comparison("click_rate", "personal")
    assert c.estimate == pytest.approx(ref.estimate, rel=1e-9)
    assert c.ci_low == pytest.approx(ref.ci_low, rel=1e-9)
    assert c.ci_high == pytest.approx(ref.ci_high, rel=1e-9)
    # Declared covariates the assignment lacks: a clear error naming the column.
    sim.assignment.to_parquet(tmp_path / "bare.parquet")
    with pytest.raises(EventsError, match="pre_clicks"):
        analyze_files(spec, tmp_path / "events.parquet", tmp_path / "bare.parquet")


def test_incrementality_reaches_mlflow_metrics_and_the_html_report(holdout_run, tmp_path) -> None:
    from loopexp.run.outputs import write_html_report
    from loopexp.track.describe import detail_tables, headline_metrics, results_metrics

    _, _, results, _ = holdout_run
    rev = {r.arm: r for r in results.incrementality if r.metric == "revenue_per_assigned"}
    metrics = results_metrics(results)
    pooled = rev["all_mailed"]
    assert metrics["holdout.revenue_per_assigned.all_mailed.incremental_total"] == pytest.approx(
        pooled.incremental_total
    )
    # Each mailed arm against the holdout is a table row, not a metric per variant (issue #30).
    assert not any(".personal." in k for k in metrics)
    arms = detail_tables(results)["holdout"]
    row = arms[(arms.metric == "conversion_per_assigned") & (arms.arm == "personal")]
    assert float(row.p_value_adjusted.iloc[0]) <= 1
    headline = headline_metrics(results)
    assert headline["holdout.revenue_added"] == pytest.approx(pooled.incremental_total)
    assert headline["holdout.revenue_added_low"] < headline["holdout.revenue_added_high"]
    page = write_html_report(results, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "What the mailing added over the no-mail holdout" in page
    assert f"{pooled.incremental_total:+,.2f}" in page
