"""Metric definitions as data: the library, spec-defined metrics, compilation, outcome tables,
attribution windows, caps, covariates, ratio metrics (delta method) and per-link clicks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from loopexp.analysis.analyze import analyze
from loopexp.cli import app
from loopexp.design.spec import SpecError, load_spec, parse_spec
from loopexp.events.validation import DUCKDB, SPARK
from loopexp.metrics import (
    LIBRARY,
    METRICS,
    Measure,
    MetricDef,
    MetricsError,
    compute,
    compute_metrics,
    compute_outcome_metrics,
    link_clicks,
    normalize_url,
    resolve_metric,
)
from loopexp.metrics.compile import make_plan, per_recipient_sql, quote
from loopexp.metrics.links import normalized_url_sql
from loopexp.sim.datasets import hillstrom_outcomes, hillstrom_sufficient_stats
from loopexp.stats.comparison import DeltaRatio
from loopexp.stats.ratio import compare_ratios, ratio_and_variance
from tests.test_engine import ASSIGNMENT, campaign_events, ev, frame

ROOT = Path(__file__).resolve().parents[1]
HILLSTROM_SPEC = ROOT / "experiments" / "hillstrom_outcomes.yaml"
DEMO = ROOT / "experiments" / "subject_line_demo.yaml"


def revenue(**kw) -> Measure:
    return Measure(events=["order"], aggregate="sum_revenue", **kw)


def mean_metric(name: str, numerator: Measure, denominator: str = "assigned", **kw) -> MetricDef:
    return MetricDef(name=name, kind="mean", numerator=numerator, denominator=denominator, **kw)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return frame(campaign_events())


# --- the library -------------------------------------------------------------------------------


def test_library_keeps_every_legacy_metric_and_adds_ratio_and_revenue_metrics():
    for name, legacy in METRICS.items():
        d = LIBRARY[name]
        assert (d.kind, d.denominator, d.higher_is_better) == (
            legacy.kind,
            legacy.denominator,
            legacy.higher_is_better,
        )
    assert LIBRARY["click_to_open_rate"].kind == "ratio"
    assert LIBRARY["revenue_per_click"].kind == "ratio"
    assert LIBRARY["revenue_per_recipient"].denominator == "sent"
    with pytest.raises(KeyError, match="known metrics"):
        resolve_metric("nope")


def test_new_library_metrics_by_hand(events):
    t = compute_metrics(
        events, ASSIGNMENT, ["click_to_open_rate", "revenue_per_recipient", "revenue_per_click"]
    )
    # click_to_open_rate over delivered: a1 clicked+opened (human), a2 machine open + bot click.
    cto = t.get("click_to_open_rate", "a")
    assert (cto.n, cto.sum, cto.den_sum, cto.cross_sum, cto.value) == (2, 1.0, 1.0, 1.0, 1.0)
    # b1's open has an unknown machine flag: counted as human.
    assert t.get("click_to_open_rate", "b").value == 1.0
    rpr = t.get("revenue_per_recipient", "a")
    assert (rpr.n, rpr.sum, rpr.sum_sq) == (3, 15.5, 15.5**2)
    assert t.get("revenue_per_recipient", "holdout").n == 0  # not sent
    rpc = t.get("revenue_per_click", "a")  # 15.5 revenue over a1's two human clicks
    assert (rpc.sum, rpc.den_sum, rpc.den_sum_sq, rpc.cross_sum) == (15.5, 2.0, 4.0, 31.0)
    assert rpc.value == 7.75
    assert t.get("revenue_per_click", "b").value == 20.0  # the bot click is not a click
    frame_ = t.to_frame()
    assert {"den_sum", "cross_sum", "value"} <= set(frame_.columns)


# --- populations, windows, caps, filters, covariates ---------------------------------------------


def test_every_population(events):
    defs = [
        MetricDef(
            name=f"ordered_{p}",
            kind="proportion",
            numerator=Measure(events=["order"]),
            denominator=p,
        )
        for p in ("assigned", "sent", "delivered", "opened")
    ]
    t = compute_metrics(events, ASSIGNMENT, defs)
    assert t.get("ordered_assigned", "holdout").n == 1  # holdout is assigned
    assert t.get("ordered_assigned", "holdout").sum == 1.0  # its organic order
    assert t.get("ordered_sent", "holdout").n == 0
    assert [t.get(f"ordered_{p}", "a").n for p in ("assigned", "sent", "delivered", "opened")] == [
        3,
        3,
        2,
        1,
    ]
    assert t.get("ordered_opened", "a").sum == 1.0


def test_attribution_window_after_send_or_delivery(events):
    # a1: send at 0, delivered at 1, orders at 40 (10.0) and 50 (5.5) minutes; b1 order at 60.
    hours = 49.5 / 60
    defs = [
        mean_metric("rev_send", revenue(window={"hours": hours, "after": "send"})),
        mean_metric("rev_delivered", revenue(window={"hours": hours, "after": "delivered"})),
        mean_metric("rev_all", revenue()),
    ]
    t = compute_metrics(events, ASSIGNMENT, defs)
    assert t.get("rev_send", "a").sum == 10.0  # 50 min after send: outside 49.5
    assert t.get("rev_delivered", "a").sum == 15.5  # 49 min after delivery: inside
    assert t.get("rev_send", "b").sum == 0.0
    assert t.get("rev_all", "holdout").sum == 7.0
    assert t.get("rev_send", "holdout").sum == 0.0  # no send: nothing attributed


def test_cap_and_where_filter_bound_as_parameters(events):
    defs = [
        mean_metric("rev_capped", revenue(cap=12)),
        mean_metric(
            "clicks_link1",
            Measure(events=["click"], aggregate="count", where={"url": "https://x/1"}),
        ),
        mean_metric(
            "clicks_injected",
            Measure(events=["click"], aggregate="count", where={"url": "x' OR '1'='1"}),
        ),
    ]
    t = compute_metrics(events, ASSIGNMENT, defs)
    assert (t.get("rev_capped", "a").sum, t.get("rev_capped", "a").sum_sq) == (12.0, 144.0)
    assert t.get("rev_capped", "b").sum == 12.0
    assert t.get("clicks_link1", "a").sum == 1.0
    assert t.get("clicks_injected", "a").sum == 0.0  # a value, never SQL
    sql = per_recipient_sql(make_plan(defs), DUCKDB)
    assert "OR '1'='1" not in sql.sql and "x' OR '1'='1" in sql.params.values()


def test_identifiers_never_reach_sql_unchecked():
    with pytest.raises(ValidationError):
        Measure(column='spend"; DROP TABLE x; --')
    with pytest.raises(ValidationError, match="unknown column"):
        Measure(events=["click"], where={"url; --": "x"})
    with pytest.raises(ValidationError):
        MetricDef(name="m", kind="mean", numerator=Measure(column="spend"), covariates=["a b"])
    with pytest.raises(MetricsError):
        quote(DUCKDB, "a-b")
    assert quote(SPARK, "history") == "`history`" and quote(DUCKDB, "history") == '"history"'


def test_covariate_cross_sums_from_the_assignment(events):
    rng = np.random.default_rng(3)
    assign = ASSIGNMENT.assign(pre_revenue=rng.uniform(0, 50, len(ASSIGNMENT)).round(2))
    d = MetricDef(
        name="rev", kind="mean", numerator=revenue(), denominator="sent", covariates=["pre_revenue"]
    )
    t = compute_metrics(events, assign, [d])
    rev = {"a1": 15.5, "b1": 20.0}
    for variant in ("a", "b"):
        rows = assign[assign.variant_id == variant]
        x = rows.pre_revenue.to_numpy()
        y = rows.recipient_key.map(rev).fillna(0).to_numpy()
        c = t.get("rev", variant).covariates["pre_revenue"]
        assert c.sum == pytest.approx(x.sum(), rel=1e-12)
        assert c.sum_sq == pytest.approx((x * x).sum(), rel=1e-12)
        assert c.cross == pytest.approx((x * y).sum(), rel=1e-12)
    missing = assign.astype({"pre_revenue": "float64"})
    missing.loc[0, "pre_revenue"] = np.nan
    with pytest.raises(MetricsError, match=r"covariate 'pre_revenue'.*missing"):
        compute_metrics(events, missing, [d])
    with pytest.raises(Exception, match="pre_revenue"):
        compute_metrics(events, ASSIGNMENT, [d])  # the column is not there


# --- the spec's metrics section ------------------------------------------------------------------


def test_spec_defines_metrics_and_uses_them_everywhere():
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace(
        "primary_metric: click_rate",
        "metrics:\n  - name: revenue_24h\n    kind: mean\n    numerator:\n      events: [order]\n"
        "      aggregate: sum_revenue\n      window: {hours: 24, after: delivered}\n"
        "      cap: 500\n    denominator: delivered\n"
        "primary_metric: revenue_24h",
    ).replace("  - metric: unsubscribe_rate", "  - metric: revenue_24h")
    spec = parse_spec(text)
    assert spec.metric("revenue_24h").numerator.window.hours == 24
    assert spec.metric("click_rate") == LIBRARY["click_rate"]
    assert spec.all_metrics[0] == "revenue_24h"
    again = parse_spec(spec.to_yaml())
    assert again == spec and again.sha256() == spec.sha256()


def test_spec_without_metrics_renders_as_before():
    spec = load_spec(DEMO)
    assert "metrics:" not in spec.to_yaml().replace("secondary_metrics", "")


@pytest.mark.parametrize(
    ("insert", "needle"),
    [
        ("  - name: click_rate\n    kind: mean\n    numerator: {column: x}\n", "standard metrics"),
        ("  - name: m1\n    kind: ratio\n    numerator: {column: x}\n", "ratio_denominator"),
        ("  - name: m1\n    kind: mean\n    numerator: {events: [order], column: x}\n", "either"),
        ("  - name: m1\n    kind: mean\n    numerator: {events: [purchase]}\n", "metrics[0]"),
    ],
)
def test_bad_metric_definitions_are_located(tmp_path, insert, needle):
    text = DEMO.read_text(encoding="utf-8").replace(
        "primary_metric: click_rate", "metrics:\n" + insert + "primary_metric: click_rate"
    )
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert needle in str(info.value)


def test_unknown_custom_guardrail_is_rejected():
    text = DEMO.read_text(encoding="utf-8").replace(
        "  - metric: unsubscribe_rate", "  - metric: my_metric"
    )
    with pytest.raises(SpecError, match="unknown metric 'my_metric'"):
        parse_spec(text)


# --- outcome tables (Hillstrom) ------------------------------------------------------------------


def test_hillstrom_through_the_outcome_table_matches_its_reference_stats():
    spec = load_spec(HILLSTROM_SPEC)
    table = compute_outcome_metrics(hillstrom_outcomes(None), spec.metric_defs)
    reference = {
        (s.metric, s.variant_id): s for s in hillstrom_sufficient_stats(None)
    }  # an independent DuckDB query in loopexp.sim.datasets
    for metric, column in (
        ("visit_rate", "visit"),
        ("purchase_rate", "conversion"),
        ("spend_per_customer", "spend"),
    ):
        for variant in ("mens", "womens", "no_email"):
            got, ref = table.get(metric, variant), reference[(column, variant)]
            assert (got.n, got.sum) == (ref.n, pytest.approx(ref.sum, rel=1e-12))
            assert got.sum_sq == pytest.approx(ref.sum_sq, rel=1e-12)
    raw = hillstrom_outcomes(None)
    mens = raw[raw.variant_id == "mens"]
    cov = table.get("spend_per_customer", "mens").covariates["history"]
    assert cov.cross == pytest.approx((mens.history * mens.spend).sum(), rel=1e-12)
    capped = table.get("spend_per_customer_capped", "mens")
    assert capped.sum == pytest.approx(mens.spend.clip(upper=250).sum(), rel=1e-12)
    spv = table.get("spend_per_visit", "mens")
    assert spv.value == pytest.approx(mens.spend.sum() / mens.visit.sum(), rel=1e-12)
    assert table.segments == ["existing_customer", "new_customer"]
    results = analyze(spec, table)
    assert results.decision.status.value == "ship"  # visits: +72 % for the men's mailing
    assert {c.method for c in results.comparisons if c.metric == "spend_per_visit"} == {
        DeltaRatio.description
    }


def test_percentile_caps_on_an_outcome_table():
    # The cap is the percentile (R type 7 = numpy's default) of the non-zero spend of every
    # customer in the population (assigned: all arms pooled, the no-mail arm too); a metric's
    # static cap is kept when it is lower.
    spec = load_spec(HILLSTROM_SPEC)
    raw = hillstrom_outcomes(None)
    caps = {"spend_per_customer": 0.9, "spend_per_customer_capped": 0.999, "visit_rate": 0.5}
    table = compute_outcome_metrics(raw, spec.metric_defs, caps=caps)
    cap = float(np.quantile(raw.spend[raw.spend > 0], 0.9))
    high = float(np.quantile(raw.spend[raw.spend > 0], 0.999))
    assert table.caps == {
        "spend_per_customer": pytest.approx(cap, rel=1e-12),
        "spend_per_customer_capped": pytest.approx(min(high, 250.0), rel=1e-12),
    }  # a proportion is never capped
    assert 0 < cap < raw.spend.max()
    for variant in ("mens", "womens", "no_email"):
        spend = raw[raw.variant_id == variant].spend
        got = table.get("spend_per_customer", variant)
        assert got.n == len(spend)
        assert got.sum == pytest.approx(spend.clip(upper=cap).sum(), rel=1e-12)
        assert got.sum_sq == pytest.approx((spend.clip(upper=cap) ** 2).sum(), rel=1e-12)
        assert table.get("spend_per_customer_capped", variant).sum == pytest.approx(
            spend.clip(upper=min(high, 250.0)).sum(), rel=1e-12
        )
    report = compute(spec.metric_defs, outcomes=raw, caps=caps, links=False)
    assert report.table.caps == table.caps


def test_outcome_table_errors_name_the_column():
    spec = load_spec(HILLSTROM_SPEC)
    table = hillstrom_outcomes(None).drop(columns=["spend"])
    with pytest.raises(MetricsError, match=r"missing column\(s\) 'spend' \(for spend_per"):
        compute_outcome_metrics(table, spec.metric_defs)
    holes = hillstrom_outcomes(None)
    holes.loc[3, "visit"] = None
    with pytest.raises(MetricsError, match="'visit' has 1 missing value"):
        compute_outcome_metrics(holes, spec.metric_defs)
    with pytest.raises(MetricsError, match="'opened_human' \\(for open_rate\\)"):
        compute_outcome_metrics(hillstrom_outcomes(None), ["open_rate"])  # standard: named column
    with pytest.raises(MetricsError, match="outcome table does not have"):
        compute_outcome_metrics(hillstrom_outcomes(None), [mean_metric("r", revenue(cap=5))])


# --- the delta method ----------------------------------------------------------------------------


def test_ratio_variance_equals_the_linearisation_from_raw_data():
    rng = np.random.default_rng(11)
    x = rng.poisson(2.0, 400).astype(float)
    y = rng.binomial(x.astype(int), 0.3).astype(float)
    n = len(x)
    ratio, var = ratio_and_variance(
        n, y.sum(), (y * y).sum(), x.sum(), (x * x).sum(), (x * y).sum()
    )
    linear = (y - ratio * x) / x.mean()  # influence function of sum(y)/sum(x)
    assert ratio == pytest.approx(y.sum() / x.sum(), rel=1e-12)
    assert var == pytest.approx(linear.var(ddof=1) / n, rel=1e-10)


def test_ratio_ci_covers_at_the_nominal_rate():
    """A/A calibration: the 95 % CI of the ratio difference covers 0 about 95 % of the time."""
    rng = np.random.default_rng(5)
    reps, n = 2000, 400
    covered = 0
    for _ in range(reps):
        arms = []
        for _ in range(2):
            x = rng.poisson(1.5, n).astype(float)
            y = rng.binomial(x.astype(int), 0.25).astype(float)
            arms.append((n, y.sum(), (y * y).sum(), x.sum(), (x * x).sum(), (x * y).sum()))
        e = compare_ratios(arms[0], arms[1])
        covered += e.ci_low <= 0 <= e.ci_high
    assert 0.935 <= covered / reps <= 0.965
    with pytest.raises(ValueError, match="non-zero denominator"):
        compare_ratios((5, 0, 0, 0, 0, 0), arms[1])


def test_delta_ratio_method_agrees_with_compare_ratios_and_inverts_its_test():
    t = (400, 120.0, 150.0, 600.0, 1100.0, 200.0)
    c = (400, 100.0, 130.0, 600.0, 1150.0, 180.0)
    m, e = DeltaRatio(t, c), compare_ratios(t, c)
    assert m.p_value() == pytest.approx(e.p_value, rel=1e-12)
    ci = m.interval(0.05)
    assert (ci.diff_low, ci.diff_high) == (pytest.approx(e.ci_low), pytest.approx(e.ci_high))
    # the interval at alpha = p touches "no difference" (ratio 1): the test, inverted
    at_p = m.interval(m.p_value())
    assert min(abs(at_p.ratio_low - 1), abs(at_p.ratio_high - 1)) < 1e-6


# --- per-link clicks ------------------------------------------------------------------------------


def test_normalize_url_examples():
    assert (
        normalize_url("HTTPS://Shop.Example/New/?utm_source=nl&id=3&UTM_Medium=e&gclid=x#top")
        == "https://shop.example/New?id=3"
    )
    assert normalize_url("https://a.b/p?utm_x") == "https://a.b/p"
    assert normalize_url("https://a.b/p?gclidx=1") == "https://a.b/p?gclidx=1"
    assert normalize_url("https://a.b/?") == "https://a.b"


url_part = st.text(alphabet="abcAB_=/.1", max_size=6)
param = st.tuples(
    st.sampled_from(["utm_source", "UTM_campaign", "gclid", "id", "ref", "gclidz", "", "fbclid"]),
    st.one_of(st.none(), url_part),
)


@settings(max_examples=60, deadline=None)
@given(
    host=st.sampled_from(["https://Shop.example", "http://a.b:8080", ""]),
    path=st.text(alphabet="abC/-_.", max_size=8),
    params=st.lists(param, max_size=5),
    fragment=st.one_of(st.none(), url_part),
)
def test_sql_normalisation_matches_python(host, path, params, fragment):
    query = "&".join(k if v is None else f"{k}={v}" for k, v in params)
    url = host + path + (f"?{query}" if params else "") + (f"#{fragment}" if fragment else "")
    (got,) = duckdb.execute(f"SELECT {normalized_url_sql('$u', DUCKDB)}", {"u": url}).fetchone()
    assert got == normalize_url(url)


def test_link_table_merges_tracked_variants_of_a_link():
    rows = [
        ev("d1", "delivered", "a1"),
        ev("c1", "click", "a1", 1, url="https://shop.example/new?utm_source=nl"),
        ev("c2", "click", "a1", 2, url="https://shop.example/new?utm_source=fb#x"),
        ev("c3", "click", "a2", 3, url="https://shop.example/sale"),
        ev("c4", "click", "a2", 4, url="https://shop.example/sale", is_bot_click=True),
        ev("c5", "click", "b1", 5, url="https://shop.example/sale?gclid=1"),
        ev("c6", "click", "zz", 6, url="https://shop.example/other"),  # not assigned
    ]
    links = link_clicks(frame(rows), ASSIGNMENT)
    assert links.to_dict(orient="records") == [
        {
            "variant_id": "a",
            "link": "https://shop.example/new",
            "clicks": 2,
            "clickers": 1,
            "share": pytest.approx(2 / 3),
        },
        {
            "variant_id": "a",
            "link": "https://shop.example/sale",
            "clicks": 1,
            "clickers": 1,
            "share": pytest.approx(1 / 3),
        },
        {
            "variant_id": "b",
            "link": "https://shop.example/sale",
            "clicks": 1,
            "clickers": 1,
            "share": 1.0,
        },
    ]


# --- API and CLI ---------------------------------------------------------------------------------


def test_compute_needs_exactly_one_input(events):
    with pytest.raises(ValueError, match="either events and assignment"):
        compute(["click_rate"], events=events)
    with pytest.raises(ValueError, match="either events and assignment"):
        compute(["click_rate"], events=events, assignment=ASSIGNMENT, outcomes=events)
    report = compute(["click_rate"], events=events, assignment=ASSIGNMENT)
    assert report.links is not None and report.to_dict()["stats"][0]["metric"] == "click_rate"


def test_cli_metrics_json_from_outcomes_and_events(tmp_path, events):
    runner = CliRunner()
    hill = tmp_path / "hill.parquet"
    hillstrom_outcomes(None).to_parquet(hill)
    out = runner.invoke(app, ["metrics", str(HILLSTROM_SPEC), "--outcomes", str(hill), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    visit = [
        s
        for s in data["stats"]
        if (s["metric"], s["variant_id"], s["segment"]) == ("visit_rate", "mens", "all")
    ]
    assert visit[0]["n"] == 21307 and math.isclose(
        visit[0]["value"], 0.1828, abs_tol=5e-5
    )  # published: 18.28 %
    assert "history" in visit[0]["covariates"]

    ev_path, as_path = tmp_path / "events.parquet", tmp_path / "assignment.parquet"
    events.to_parquet(ev_path)
    ASSIGNMENT.to_parquet(as_path)
    out = runner.invoke(
        app, ["metrics", str(DEMO), "--events", str(ev_path), "--assignment", str(as_path)]
    )
    assert out.exit_code == 0, out.output
    assert "Human clicks per link" in out.output and "https://x/1" in out.output
    # The spec's percentile cap (decision.cap_percentile) applies, as in `loopexp run`.
    as_json = runner.invoke(
        app,
        ["metrics", str(DEMO), "--events", str(ev_path), "--assignment", str(as_path), "--json"],
    )
    assert as_json.exit_code == 0, as_json.output
    assert set(json.loads(as_json.output)["caps"]) == {"revenue_per_delivered"}

    bad = runner.invoke(app, ["metrics", str(DEMO), "--events", str(ev_path)])
    assert bad.exit_code == 2 and "--outcomes" in bad.output
    wrong = runner.invoke(app, ["metrics", str(DEMO), "--outcomes", str(hill)])
    assert wrong.exit_code == 2 and "missing column" in wrong.output


def test_a_metric_named_as_its_outcome_column_is_computed():
    """Regression: the missing-value check of column ``spend`` was keyed like a metric named
    ``spend``, so that metric came back with no statistics at all."""
    import pandas as pd

    from loopexp.metrics import Measure, MetricDef, compute_outcome_metrics

    frame = pd.DataFrame({"variant_id": ["a", "a", "b"], "spend": [1.0, 3.0, 5.0]})
    metric = MetricDef(name="spend", kind="mean", numerator=Measure(column="spend"))
    metric = metric.model_copy(update={"denominator": "assigned"})
    table = compute_outcome_metrics(frame, [metric])
    assert table.get("spend", "a").mean == 2.0 and table.get("spend", "b").n == 1


def test_cli_metrics_caps_an_outcome_table_as_it_caps_events(tmp_path):
    """The spec's decision.cap_percentile applies to either input: same spec, same numbers."""
    import yaml

    hill = tmp_path / "hill.parquet"
    hillstrom_outcomes(None).to_parquet(hill)
    doc = yaml.safe_load(HILLSTROM_SPEC.read_text())
    doc["decision"]["cap_percentile"] = 0.75  # Hillstrom's spend tops out at $499 = its p99
    capped_spec = tmp_path / "hillstrom_capped.yaml"
    capped_spec.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    raw, capped = (
        json.loads(
            runner.invoke(app, ["metrics", str(path), "--outcomes", str(hill), "--json"]).output
        )
        for path in (HILLSTROM_SPEC, capped_spec)
    )
    assert not raw["caps"] and "spend_per_customer" in capped["caps"]

    def spend(data):
        return next(
            s["value"]
            for s in data["stats"]
            if (s["metric"], s["variant_id"], s["segment"]) == ("spend_per_customer", "mens", "all")
        )

    assert spend(raw) == pytest.approx(1.422617, abs=1e-6)  # published (SOURCES.md)
    assert spend(capped) < spend(raw)
