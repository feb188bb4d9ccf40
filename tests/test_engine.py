"""Tests of the DuckDB metrics engine (loopexp.metrics.engine) and metric definitions."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopexp.design.spec import load_spec
from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS
from loopexp.metrics import (
    ALL_SEGMENTS,
    METRICS,
    OUTCOMES,
    EventsError,
    GroupStats,
    MetricTable,
    compute_metrics,
    get_metric,
)
from loopexp.sim.simulate import simulate_campaign, write_events

ROOT = Path(__file__).resolve().parents[1]
T0 = pd.Timestamp("2026-03-02 09:00", tz="UTC")
ALL_METRICS = list(METRICS)


# --- helpers -----------------------------------------------------------------------------------


def ev(event_id: str, event_type: str, recipient_key: str | None, minute: int = 0, **cols):
    row = {name: None for name in EVENT_SCHEMA.names}
    row.update(
        event_id=event_id,
        provider=cols.pop("provider", "esp"),
        event_type=event_type,
        ts=T0 + pd.Timedelta(minutes=minute),
        recipient_key=recipient_key,
    )
    row.update(cols)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=EVENT_SCHEMA.names)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for flag in ("is_machine_open", "is_bot_click"):
        df[flag] = df[flag].astype("boolean")
    df["revenue"] = df["revenue"].astype("float64")
    return df


def assignment(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["recipient_key", "segment", "variant_id"])


def stats_map(table: MetricTable) -> dict[tuple[str, str, str], tuple[int, float, float]]:
    return {(s.metric, s.variant_id, s.segment): (s.n, s.sum, s.sum_sq) for s in table.stats}


# A small campaign: variants a and b, one holdout recipient.
#   a1 (prospect):  delivered; machine open + human open; 2 human clicks; orders 10 + 5.5
#   a2 (prospect):  delivered; machine open only; bot click only; unsubscribe
#   a3 (inactive):  hard bounce; (a click without delivery: lost delivery event)
#   b1 (prospect):  delivered; human open; human click + bot click; order 20
#   b2 (inactive):  delivered; nothing else; complaint
#   b3 (inactive):  soft bounce
#   h1 (prospect):  holdout; an organic order 7
ASSIGNMENT = assignment(
    [
        ("a1", "prospect", "a"),
        ("a2", "prospect", "a"),
        ("a3", "inactive", "a"),
        ("b1", "prospect", "b"),
        ("b2", "inactive", "b"),
        ("b3", "inactive", "b"),
        ("h1", "prospect", "holdout"),
    ]
)


def campaign_events() -> list[dict]:
    rows = []
    for key in ("a1", "a2", "a3", "b1", "b2", "b3"):
        rows.append(ev(f"send-{key}", "send", key))
    rows += [
        ev("e01", "delivered", "a1", 1),
        ev("e02", "open", "a1", 2, is_machine_open=True),
        ev("e03", "open", "a1", 30, is_machine_open=False),
        ev("e04", "click", "a1", 31, is_bot_click=False, url="https://x/1"),
        ev("e05", "click", "a1", 32, is_bot_click=False, url="https://x/2"),
        ev("e06", "order", "a1", 40, revenue=10.0, currency="USD"),
        ev("e07", "order", "a1", 50, revenue=5.5, currency="USD"),
        ev("e08", "delivered", "a2", 1),
        ev("e09", "open", "a2", 2, is_machine_open=True),
        ev("e10", "click", "a2", 1, is_bot_click=True, bot_reason="scanner"),
        ev("e11", "unsubscribe", "a2", 90),
        ev("e12", "bounce_hard", "a3", 1, bounce_class="invalid"),
        ev("e13", "click", "a3", 5, is_bot_click=False),
        ev("e14", "delivered", "b1", 1),
        ev("e15", "open", "b1", 20),  # is_machine_open unknown (null): counts as human
        ev("e16", "click", "b1", 21, is_bot_click=False),
        ev("e17", "click", "b1", 1, is_bot_click=True),
        ev("e18", "order", "b1", 60, revenue=20.0, currency="USD"),
        ev("e19", "delivered", "b2", 1),
        ev("e20", "complaint", "b2", 100),
        ev("e21", "bounce_soft", "b3", 1, bounce_class="mailbox_full"),
        ev("e22", "order", "h1", 500, revenue=7.0, currency="USD"),
    ]
    return rows


@pytest.fixture
def clean_table() -> MetricTable:
    return compute_metrics(frame(campaign_events()), ASSIGNMENT, ALL_METRICS)


# --- definitions -------------------------------------------------------------------------------


def test_every_metric_names_a_known_outcome_and_denominator():
    assert set(METRICS) >= {
        "delivery_rate",
        "open_rate",
        "open_rate_raw",
        "click_rate",
        "click_rate_raw",
        "conversion_rate",
        "revenue_per_delivered",
        "unsubscribe_rate",
    }
    for name, m in METRICS.items():
        assert m.name == name
        assert m.numerator in OUTCOMES
        assert m.denominator in ("sent", "delivered", "assigned")
        # Only the intent-to-treat metrics of the holdout comparison count everyone assigned.
        assert (m.denominator == "assigned") == name.endswith("_per_assigned")
        assert m.kind in ("proportion", "mean")
    assert get_metric("click_rate").denominator == "delivered"
    assert get_metric("delivery_rate").denominator == "sent"
    assert get_metric("revenue_per_delivered").kind == "mean"
    assert get_metric("unsubscribe_rate").higher_is_better is False


def test_get_metric_unknown_lists_known_metrics():
    with pytest.raises(KeyError, match="unknown metric 'clicks'") as info:
        get_metric("clicks")
    assert "click_rate" in str(info.value)
    assert "revenue_per_delivered" in str(info.value)


def test_compute_metrics_rejects_unknown_metric():
    with pytest.raises(KeyError, match="known metrics"):
        compute_metrics(frame(campaign_events()), ASSIGNMENT, ["nope"])


# --- exact numbers on the hand-made campaign ---------------------------------------------------


def test_counts_of_clean_campaign(clean_table):
    t = clean_table
    assert t.events == len(campaign_events())
    assert t.quarantined == 0
    assert t.quarantine_reasons == {}
    assert t.unassigned_events == 0
    assert t.assigned == {"a": 3, "b": 3, "holdout": 1}


def test_delivery_rate_is_per_sent_and_holdout_has_no_sent(clean_table):
    t = clean_table
    assert stats_map(t)[("delivery_rate", "a", "all")] == (3, 2.0, 2.0)
    assert stats_map(t)[("delivery_rate", "b", "all")] == (3, 2.0, 2.0)
    assert stats_map(t)[("hard_bounce_rate", "a", "all")] == (3, 1.0, 1.0)
    assert stats_map(t)[("soft_bounce_rate", "b", "all")] == (3, 1.0, 1.0)
    hold = t.get("delivery_rate", "holdout")
    assert hold.n == 0
    assert hold.sum == 0.0
    assert hold.sum_sq == 0.0
    assert math.isnan(hold.mean)


def test_empty_groups_have_zero_sums_not_nan(clean_table):
    # n == 0 groups (the holdout here) must report sum 0: NaN would leak into results.json.
    for s in clean_table.stats:
        assert not math.isnan(s.sum), s
        assert not math.isnan(s.sum_sq), s
        if s.n == 0:
            assert (s.sum, s.sum_sq) == (0.0, 0.0)


def test_empty_group_round_trips_through_results_json(tmp_path):
    # Regression: a variant with no delivered recipient in a segment gave sum = NaN, written as
    # null in results.json, which ExperimentResults.read_json then rejected.
    from loopexp.analysis.analyze import analyze
    from loopexp.analysis.results import ExperimentResults

    spec = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    sim = simulate_campaign(spec, 1_500, seed=3)
    a = sim.assignment
    lost = set(a.loc[(a.variant_id == "urgency") & (a.segment == "inactive"), "recipient_key"])
    events = sim.events[~(sim.events.recipient_key.isin(lost) & (sim.events.event_type != "send"))]
    table = compute_metrics(events, a, spec.all_metrics)
    empty = table.get("click_rate", "urgency", "inactive")
    assert (empty.n, empty.sum, empty.sum_sq) == (0, 0.0, 0.0)
    path = analyze(spec, table).write_json(tmp_path / "results.json")
    back = ExperimentResults.read_json(path)
    inactive = next(s for s in back.segments if s.segment == "inactive")
    urgency = next(v for v in inactive.variants if v.id == "urgency")
    assert urgency.metrics["click_rate"].numerator == 0.0
    assert urgency.metrics["click_rate"].denominator == 0
    assert urgency.metrics["click_rate"].value is None


def test_machine_opens_excluded_from_open_rate_but_in_raw(clean_table):
    t = clean_table
    # a: a1 opened (human + machine), a2 machine open only; delivered = 2.
    assert stats_map(t)[("open_rate", "a", "all")] == (2, 1.0, 1.0)
    assert stats_map(t)[("open_rate_raw", "a", "all")] == (2, 2.0, 2.0)
    # b: b1 opened (flag unknown counts as human), b2 did not.
    assert stats_map(t)[("open_rate", "b", "all")] == (2, 1.0, 1.0)
    assert stats_map(t)[("open_rate_raw", "b", "all")] == (2, 1.0, 1.0)
    assert t.get("open_rate", "a").mean == 0.5


def test_bot_clicks_excluded_and_clicks_unique_per_recipient(clean_table):
    t = clean_table
    # a1 clicked twice (counts once); a2 has a bot click only; a3's click has no delivery.
    assert stats_map(t)[("click_rate", "a", "all")] == (2, 1.0, 1.0)
    assert stats_map(t)[("click_rate_raw", "a", "all")] == (2, 2.0, 2.0)
    # b1 has a human and a bot click: one clicker either way.
    assert stats_map(t)[("click_rate", "b", "all")] == (2, 1.0, 1.0)
    assert stats_map(t)[("click_rate_raw", "b", "all")] == (2, 1.0, 1.0)


def test_revenue_sum_and_sum_sq_per_recipient(clean_table):
    t = clean_table
    # a1's two orders add up per recipient: sum_sq is 15.5², not 10² + 5.5².
    assert stats_map(t)[("revenue_per_delivered", "a", "all")] == (2, 15.5, 15.5**2)
    assert stats_map(t)[("revenue_per_delivered", "b", "all")] == (2, 20.0, 400.0)
    assert t.get("revenue_per_delivered", "a").mean == pytest.approx(7.75)
    assert stats_map(t)[("conversion_rate", "a", "all")] == (2, 1.0, 1.0)
    # The holdout's organic order is not "per delivered": nobody in the holdout was delivered.
    assert stats_map(t)[("revenue_per_delivered", "holdout", "all")] == (0, 0.0, 0.0)


def test_unsubscribe_and_complaint(clean_table):
    t = clean_table
    assert stats_map(t)[("unsubscribe_rate", "a", "all")] == (2, 1.0, 1.0)
    assert stats_map(t)[("unsubscribe_rate", "b", "all")] == (2, 0.0, 0.0)
    assert stats_map(t)[("complaint_rate", "b", "all")] == (2, 1.0, 1.0)


def test_segments_and_rollup(clean_table):
    t = clean_table
    assert t.segments == ["inactive", "prospect"]
    s = stats_map(t)
    assert s[("delivery_rate", "a", "prospect")] == (2, 2.0, 2.0)
    assert s[("delivery_rate", "a", "inactive")] == (1, 0.0, 0.0)
    assert s[("click_rate", "b", "inactive")] == (1, 0.0, 0.0)
    assert s[("revenue_per_delivered", "b", "prospect")] == (1, 20.0, 400.0)
    for metric in ALL_METRICS:
        for variant in ("a", "b"):
            parts = [s[(metric, variant, seg)] for seg in t.segments if (metric, variant, seg) in s]
            total = s[(metric, variant, ALL_SEGMENTS)]
            assert total[0] == sum(p[0] for p in parts)
            assert total[1] == pytest.approx(sum(p[1] for p in parts))
            assert total[2] == pytest.approx(sum(p[2] for p in parts))
    with pytest.raises(KeyError, match="no statistics"):
        t.get("click_rate", "holdout", "inactive")


def test_to_frame(clean_table):
    df = clean_table.to_frame()
    assert set(df.columns) >= {"metric", "variant_id", "segment", "n", "sum", "sum_sq", "value"}
    row = df[(df.metric == "click_rate") & (df.variant_id == "a") & (df.segment == "all")]
    assert row["value"].tolist() == [0.5]
    hold = df[(df.variant_id == "holdout") & (df.metric == "delivery_rate")]
    assert hold["value"].isna().all()


def test_groupstats_mean():
    assert GroupStats("m", "a", "all", 4, 1.0, 1.0).mean == 0.25
    assert math.isnan(GroupStats("m", "a", "all", 0, 0.0, 0.0).mean)


def test_only_requested_metrics_are_returned():
    t = compute_metrics(frame(campaign_events()), ASSIGNMENT, ["click_rate"])
    assert {s.metric for s in t.stats} == {"click_rate"}
    # "all" for a, b, holdout; a and b in both segments; the holdout only in prospect.
    assert len(t.stats) == 3 + 2 + 2 + 1


# --- quarantine --------------------------------------------------------------------------------


def dirty_events() -> tuple[list[dict], dict[str, str]]:
    """Clean campaign plus one bad row per reason; returns rows and {event_id: reason}."""
    rows = campaign_events()
    bad = {
        "q1": ("missing recipient_key", ev("q1", "click", None, 3, is_bot_click=False)),
        "q2": ("missing recipient_key", ev("q2", "click", "", 3, is_bot_click=False)),
        "q3": ("unknown event_type", ev("q3", "clicked", "b2", 3)),
        "q4": ("unknown event_type", ev("q4", None, "b2", 3)),
        "q5": ("order without a valid revenue", ev("q5", "order", "b2", 3)),
        "q6": ("order without a valid revenue", ev("q6", "order", "b2", 3, revenue=-1.0)),
    }
    rows += [row for _, row in bad.values()]
    # Same event delivered twice by the provider, later copy is the duplicate. It is a click by
    # b2 (who never clicked): if it were counted, b's click_rate would change.
    rows.append(ev("dup", "click", "b2", 70, is_bot_click=False))
    rows.append(ev("dup", "click", "b2", 71, is_bot_click=False))
    # The same event_id from another provider is not a duplicate (and not assigned).
    rows.append(ev("dup", "open", "zz", 72, provider="other-esp"))
    # A missing event_id.
    rows.append(ev(None, "open", "b2", 73))
    reasons = {k: r for k, (r, _) in bad.items()}
    return rows, reasons


def test_each_quarantine_reason_counted_and_written(tmp_path):
    rows, reasons = dirty_events()
    qpath = tmp_path / "quarantine.parquet"
    t = compute_metrics(frame(rows), ASSIGNMENT, ALL_METRICS, quarantine_path=qpath)
    assert t.quarantine_reasons == {
        "missing recipient_key": 2,
        "unknown event_type": 2,
        "order without a valid revenue": 2,
        "duplicate (provider, event_id)": 1,
        "missing event_id": 1,
    }
    assert t.quarantined == 8
    # Nothing silently dropped: every input row is either valid or quarantined.
    assert t.events == len(rows)
    q = pd.read_parquet(qpath)
    assert len(q) == t.quarantined
    assert "quarantine_reason" in q.columns
    assert set(EVENT_SCHEMA.names) <= set(q.columns)
    assert q["quarantine_reason"].value_counts().to_dict() == t.quarantine_reasons
    by_id = dict(zip(q["event_id"], q["quarantine_reason"], strict=False))
    for event_id, reason in reasons.items():
        assert by_id[event_id] == reason
    dup = q[q["event_id"] == "dup"]
    assert len(dup) == 1
    assert dup["provider"].item() == "esp"
    assert dup["ts"].item() == T0 + pd.Timedelta(minutes=71)  # the later copy
    assert q["event_id"].isna().sum() == 1
    # The other provider's "dup" is valid but its recipient is not assigned.
    assert t.unassigned_events == 1


def test_quarantined_rows_do_not_change_metrics(clean_table):
    rows, _ = dirty_events()
    dirty = compute_metrics(frame(rows), ASSIGNMENT, ALL_METRICS)
    clean = stats_map(clean_table)
    got = stats_map(dirty)
    # b2's duplicated click counts once (it is one real click): b's click_rate goes from 1 to 2.
    assert got[("click_rate", "b", "all")] == (2, 2.0, 2.0)
    assert got[("click_rate", "b", "inactive")] == (1, 1.0, 1.0)
    changed = {
        ("click_rate", "b", "all"),
        ("click_rate", "b", "inactive"),
        ("click_rate_raw", "b", "all"),
        ("click_rate_raw", "b", "inactive"),
    }
    for key, value in clean.items():
        if key not in changed:
            assert got[key] == value, key


def test_unparseable_ts_is_quarantined(tmp_path):
    rows = [
        ev("t1", "delivered", "a1"),
        ev("t2", "click", "a1", is_bot_click=False),
        ev("t3", "delivered", "b1"),
        ev("t4", "click", "b1", is_bot_click=False),
    ]
    df = frame(rows)
    df["ts"] = ["2026-03-02T09:00:00+00:00", "2026-03-02T09:05:00Z", "yesterday-ish", None]
    qpath = tmp_path / "q.parquet"
    t = compute_metrics(df, ASSIGNMENT, ["click_rate"], quarantine_path=qpath)
    assert t.quarantine_reasons == {"missing or unparseable ts": 2}
    assert t.events == 4
    assert sorted(pd.read_parquet(qpath)["event_id"]) == ["t3", "t4"]
    assert stats_map(t)[("click_rate", "a", "all")] == (1, 1.0, 1.0)
    assert stats_map(t)[("click_rate", "b", "all")] == (0, 0.0, 0.0)


def test_no_quarantine_file_when_nothing_is_quarantined(tmp_path):
    qpath = tmp_path / "q.parquet"
    t = compute_metrics(frame(campaign_events()), ASSIGNMENT, ["click_rate"], qpath)
    assert t.quarantined == 0
    assert not qpath.exists()


def test_unassigned_events_counted_not_used():
    rows = [
        *campaign_events(),
        ev("u1", "delivered", "stranger"),
        ev("u2", "click", "stranger", is_bot_click=False),
        ev("u3", "click", "seed-list", is_bot_click=False),
        ev("u4", "frobnicate", "stranger"),  # quarantined: not counted as unassigned
    ]
    t = compute_metrics(frame(rows), ASSIGNMENT, ALL_METRICS, None)
    assert t.unassigned_events == 3
    assert t.quarantined == 1
    assert t.events == len(rows)
    assert t.assigned == {"a": 3, "b": 3, "holdout": 1}
    assert stats_map(t)[("click_rate", "a", "all")] == (2, 1.0, 1.0)


# --- inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_missing_required_event_column_dataframe(column):
    df = frame(campaign_events()).drop(columns=[column])
    with pytest.raises(EventsError, match="missing required column") as info:
        compute_metrics(df, ASSIGNMENT, ["click_rate"])
    assert repr(column) in str(info.value)
    assert "DataFrame" in str(info.value)


def test_missing_required_event_column_parquet_names_file(tmp_path):
    path = tmp_path / "events_no_ts.parquet"
    frame(campaign_events()).drop(columns=["ts", "provider"]).to_parquet(path, index=False)
    with pytest.raises(EventsError) as info:
        compute_metrics(path, ASSIGNMENT, ["click_rate"])
    message = str(info.value)
    assert str(path) in message
    assert "'provider'" in message
    assert "'ts'" in message


def test_missing_assignment_column(tmp_path):
    path = tmp_path / "assignment.csv"
    ASSIGNMENT.drop(columns=["variant_id"]).to_csv(path, index=False)
    with pytest.raises(EventsError, match="variant_id") as info:
        compute_metrics(frame(campaign_events()), path, ["click_rate"])
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(EventsError, match="file not found") as info:
        compute_metrics(path, ASSIGNMENT, ["click_rate"])
    assert str(path) in str(info.value)


def test_optional_columns_may_be_absent():
    df = frame(campaign_events())[[*REQUIRED_COLUMNS, "is_bot_click", "is_machine_open"]]
    with_rev = frame(campaign_events())[[*REQUIRED_COLUMNS, "is_bot_click", "revenue"]]
    t = compute_metrics(df, ASSIGNMENT, ["click_rate", "open_rate"])
    assert stats_map(t)[("click_rate", "a", "all")] == (2, 1.0, 1.0)
    assert stats_map(t)[("open_rate", "a", "all")] == (2, 1.0, 1.0)
    # Without is_machine_open every open is human.
    t2 = compute_metrics(with_rev, ASSIGNMENT, ["open_rate", "revenue_per_delivered"])
    assert stats_map(t2)[("open_rate", "a", "all")] == (2, 2.0, 2.0)
    assert stats_map(t2)[("revenue_per_delivered", "a", "all")] == (2, 15.5, 15.5**2)


def test_parquet_paths_and_dataframes_give_the_same_result(tmp_path, clean_table):
    rows, _ = dirty_events()
    df = frame(rows)
    events_path = write_events(df, tmp_path / "events.parquet")
    assert pq.read_schema(events_path).field("ts").type == pa.timestamp("us", tz="UTC")
    assignment_path = tmp_path / "assignment.parquet"
    ASSIGNMENT.to_parquet(assignment_path, index=False)
    csv_path = tmp_path / "assignment.csv"
    ASSIGNMENT.to_csv(csv_path, index=False)

    from_frames = compute_metrics(df, ASSIGNMENT, ALL_METRICS)
    from_files = compute_metrics(events_path, assignment_path, ALL_METRICS)
    from_csv = compute_metrics(str(events_path), csv_path, ALL_METRICS)
    for other in (from_files, from_csv):
        assert stats_map(other) == stats_map(from_frames)
        assert other.assigned == from_frames.assigned
        assert other.events == from_frames.events
        assert other.quarantine_reasons == from_frames.quarantine_reasons
        assert other.unassigned_events == from_frames.unassigned_events


def test_glob_of_parquet_files(tmp_path):
    rows = campaign_events()
    write_events(frame(rows[:10]), tmp_path / "part-0.parquet")
    write_events(frame(rows[10:]), tmp_path / "part-1.parquet")
    t = compute_metrics(tmp_path / "part-*.parquet", ASSIGNMENT, ALL_METRICS)
    whole = compute_metrics(frame(rows), ASSIGNMENT, ALL_METRICS)
    assert stats_map(t) == stats_map(whole)
    assert t.events == len(rows)


# --- cross-check against pandas on a simulated campaign ----------------------------------------


def pandas_reference(events: pd.DataFrame, assign_df: pd.DataFrame) -> dict:
    """Independent computation of a few metrics' sufficient statistics per variant."""
    e = events
    per = pd.DataFrame(index=pd.Index(assign_df["recipient_key"], name="recipient_key"))
    machine = e["is_machine_open"].eq(True)
    bot = e["is_bot_click"].eq(True)
    per["delivered"] = per.index.isin(e.loc[e.event_type == "delivered", "recipient_key"])
    per["opened"] = per.index.isin(e.loc[(e.event_type == "open") & ~machine, "recipient_key"])
    per["opened_any"] = per.index.isin(e.loc[e.event_type == "open", "recipient_key"])
    per["clicked"] = per.index.isin(e.loc[(e.event_type == "click") & ~bot, "recipient_key"])
    rev = e[e.event_type == "order"].groupby("recipient_key")["revenue"].sum()
    per["revenue"] = rev.reindex(per.index).fillna(0.0)
    per = per.join(assign_df.set_index("recipient_key"))
    out = {}
    for variant, g in per.groupby("variant_id"):
        d = g[g["delivered"]]
        sent = len(g) if variant != "holdout" else 0
        out[variant] = {
            "delivery_rate": (sent, float(g["delivered"].sum()) if sent else 0.0),
            "click_rate": (len(d), float(d["clicked"].sum())),
            "open_rate": (len(d), float(d["opened"].sum())),
            "open_rate_raw": (len(d), float(d["opened_any"].sum())),
            "revenue_sum": float(d["revenue"].sum()),
            "revenue_sum_sq": float((d["revenue"] ** 2).sum()),
        }
    return out


def test_engine_matches_pandas_on_simulated_campaign():
    spec = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    spec = spec.model_copy(update={"audience": spec.audience.model_copy(update={"holdout": 0.1})})
    sim = simulate_campaign(spec, 5_000, seed=7)
    metrics = ["delivery_rate", "click_rate", "open_rate", "open_rate_raw", "revenue_per_delivered"]
    t = compute_metrics(sim.events, sim.assignment, metrics)
    ref = pandas_reference(sim.events, sim.assignment)
    assert t.quarantined == 0
    assert t.events == len(sim.events)
    assert t.assigned == sim.assignment["variant_id"].value_counts().sort_index().to_dict()
    assert set(ref) == {"control", "personal", "urgency", "holdout"}
    assert ref["holdout"]["click_rate"] == (0, 0.0)
    for variant, r in ref.items():
        for metric in ("delivery_rate", "click_rate", "open_rate", "open_rate_raw"):
            s = t.get(metric, variant)
            assert (s.n, s.sum) == r[metric], (metric, variant)
            assert s.sum_sq == s.sum
        rev = t.get("revenue_per_delivered", variant)
        assert rev.n == r["click_rate"][0]
        assert rev.sum == pytest.approx(r["revenue_sum"], rel=1e-12, abs=1e-9)
        assert rev.sum_sq == pytest.approx(r["revenue_sum_sq"], rel=1e-12, abs=1e-9)
    # The simulation has machine opens and bot clicks, so the checks above are not vacuous.
    control = ref["control"]
    assert control["open_rate_raw"][1] > control["open_rate"][1]
    assert (sim.events["is_bot_click"] == True).sum() > 0  # noqa: E712
    assert control["click_rate"][1] > 0
    assert control["revenue_sum"] > 0


# --- property: click_rate against a pure-Python reference --------------------------------------

KEYS = ["k0", "k1", "k2", "k3", "k4", "k5"]

event_strategy = st.tuples(
    st.sampled_from([*KEYS, "stranger", ""]),
    st.sampled_from(["delivered", "click", "open", "bounce_hard", "bogus"]),
    st.sampled_from([True, False, None]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event_strategy, max_size=25),
    groups=st.lists(st.sampled_from(["a", "b", "holdout"]), min_size=len(KEYS), max_size=6),
    dup_index=st.one_of(st.none(), st.integers(0, 24)),
)
def test_click_rate_matches_python_reference(events, groups, dup_index):
    rows = [
        ev(f"e{i}", et, key, i, is_bot_click=flag if et == "click" else None)
        for i, (key, et, flag) in enumerate(events)
    ]
    if dup_index is not None and dup_index < len(rows):
        copy = dict(rows[dup_index])
        copy["ts"] = copy["ts"] + pd.Timedelta(hours=1)
        rows.append(copy)  # a later duplicate: must be ignored
    assign_df = assignment(
        [
            (k, "prospect" if i % 2 else "inactive", g)
            for i, (k, g) in enumerate(zip(KEYS, groups, strict=True))
        ]
    )
    table = compute_metrics(frame(rows), assign_df, ["click_rate"])

    valid = [
        (key, et, flag)
        for key, et, flag in events
        if key and et in EVENT_TYPES  # the duplicate copy, if any, is ignored
    ]
    delivered = {k for k, et, _ in valid if et == "delivered"}
    clicked = {k for k, et, flag in valid if et == "click" and flag is not True}
    group_of = dict(zip(KEYS, groups, strict=True))
    for variant in set(groups):
        members = {k for k in KEYS if group_of[k] == variant}
        # The holdout was not mailed: it is in no denominator, even with a stray delivery event.
        denominator = members & delivered if variant != "holdout" else set()
        s = table.get("click_rate", variant)
        assert s.n == len(denominator)
        assert s.sum == len(denominator & clicked)
        assert s.sum_sq == s.sum
    assert table.assigned == {g: groups.count(g) for g in set(groups)}
    n_invalid = sum(1 for key, et, _ in events if not key or et not in EVENT_TYPES)
    n_dup = 1 if dup_index is not None and dup_index < len(events) else 0
    assert table.quarantined == n_invalid + n_dup
    assert table.events == len(rows)
    assert table.unassigned_events == sum(1 for key, et, _ in valid if key not in KEYS)


def test_holdout_is_in_no_denominator_even_with_a_stray_delivery():
    events = frame(
        [
            ev("e1", "delivered", "h1"),  # a stray event for a holdout recipient
            ev("e2", "click", "h1", 5),
            ev("e3", "delivered", "a1"),
        ]
    )
    groups = assignment([("h1", "prospect", "holdout"), ("a1", "prospect", "a")])
    table = compute_metrics(events, groups, ["click_rate", "delivery_rate"])
    assert (table.get("click_rate", "holdout").n, table.get("delivery_rate", "holdout").n) == (0, 0)
    assert table.get("click_rate", "a").n == 1
    assert table.assigned == {"a": 1, "holdout": 1}


def test_duplicate_check_ignores_copies_that_are_invalid_for_another_reason():
    # The earliest copy lacks a recipient: it is quarantined for that, and the later valid copy
    # is the one counted (not quarantined as a duplicate of an unusable row).
    events = frame([ev("e1", "delivered", None, 0), ev("e1", "delivered", "a1", 5)])
    table = compute_metrics(events, assignment([("a1", "prospect", "a")]), ["delivery_rate"])
    assert table.quarantine_reasons == {"missing recipient_key": 1}
    assert table.get("delivery_rate", "a").sum == 1
