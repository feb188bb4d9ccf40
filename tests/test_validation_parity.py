"""One validator, two engines: corrupt events give the same quarantine and statistics on both.

The fixture has one or more events for every quarantine reason of
:data:`loopexp.events.validation.REASONS` (wrong types as text, blank keys, an address as key,
unparseable and out-of-range times, unknown types, unparseable flags and revenue, negative revenue,
duplicates) beside valid events in every accepted form (ISO with and without offset, RFC 2822,
epoch seconds and milliseconds, 'yes' / '0' flags, text revenue) and events of recipients who are
not on the assignment. DuckDB and Spark (local mode) must count the same reasons and return the same
sufficient statistics: the rules exist once and are compiled per dialect.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from loopexp.events.validation import REASONS
from loopexp.metrics import LIBRARY, compute_metrics

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # CI installs Java (.ci/run); a laptop without it skips
    pytest.skip("the Spark engine needs Java 17 on PATH", allow_module_level=True)

from loopexp.metrics.spark import compute_metrics_spark
from tests.conftest import assert_same_tables

T = "2026-03-02T09:00:00Z"

#: (event_id, event_type, ts, recipient_key, is_machine_open, is_bot_click, revenue, reason)
ROWS: list[tuple] = [
    # valid, in every accepted form
    ("d1", "delivered", T, "k1", None, None, None, None),
    ("o1", "open", "2026-03-02T10:00:00+01:00", "k1", "no", None, None, None),
    ("c1", "click", "Mon, 02 Mar 2026 09:30:00 +0000", "k1", None, "0", None, None),
    ("r1", "order", "1772442000", "k1", None, None, "19.99", None),  # epoch seconds
    ("d2", "delivered", "1772442000000", "k2", None, None, None, None),  # epoch ms
    ("o2", "open", "2026-03-02 09:05:00", "k2", "yes", None, None, None),  # machine open
    ("c2", "click", T, "k2", None, "true", None, None),  # bot click
    ("d3", "delivered", T, "k3", None, None, None, None),
    ("o3", "open", T, "k3", "", None, None, None),
    ("r3", "order", T, "k3", None, None, " 5 ", None),
    ("d9", "delivered", T, "not-assigned", None, None, None, None),  # unassigned
    ("c9", "click", T, "not-assigned", None, None, None, None),
    # one or more per reason
    ("", "open", T, "k1", None, None, None, "missing event_id"),
    ("e1", "open", T, None, None, None, None, "missing recipient_key"),
    ("e2", "open", T, "", None, None, None, "missing recipient_key"),
    ("e3", "open", T, "jane.doe@example.com", None, None, None, REASONS[2]),
    ("e4", "open", "yesterday", "k1", None, None, None, "missing or unparseable ts"),
    ("e5", "open", None, "k1", None, None, None, "missing or unparseable ts"),
    ("e6", "open", "1999-12-31T23:00:00Z", "k1", None, None, None, REASONS[4]),
    ("e7", "open", "5", "k1", None, None, None, REASONS[4]),  # epoch 5 s: 1970
    ("e8", "bogus", T, "k1", None, None, None, "unknown event_type"),
    ("e9", None, T, "k1", None, None, None, "unknown event_type"),
    ("e10", "open", T, "k2", "MPP", None, None, "unparseable is_machine_open"),
    ("e11", "click", T, "k2", None, "maybe", None, "unparseable is_bot_click"),
    ("e12", "order", T, "k2", None, None, "12,5", "unparseable or non-finite revenue"),
    ("e13", "order", T, "k2", None, None, "NaN", "unparseable or non-finite revenue"),
    ("e14", "order", T, "k2", None, None, "-3", "order without a valid revenue"),
    ("e15", "order", T, "k2", None, None, None, "order without a valid revenue"),
    # later copies of valid events: duplicates (the first by time is kept)
    ("o1", "open", "2026-03-02T11:00:00Z", "k1", None, None, None, REASONS[-1]),
    ("r1", "order", "2026-03-03T09:00:00Z", "k1", None, None, "500", REASONS[-1]),
]
COLUMNS = [
    "event_id",
    "event_type",
    "ts",
    "recipient_key",
    "is_machine_open",
    "is_bot_click",
    "revenue",
]


def expected_reasons() -> dict[str, int]:
    counts: dict[str, int] = {}
    for *_, reason in ROWS:
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


@pytest.fixture(scope="module", params=["parquet", "csv"])
def corrupt(request, tmp_path_factory) -> tuple[Path, Path]:
    """The corrupt events as Parquet with every column text (as exports come), or as CSV."""
    frame = pd.DataFrame([r[:-1] for r in ROWS], columns=COLUMNS).astype("string")
    frame.insert(1, "provider", "esp")
    frame["url"] = "https://shop.example/p?utm_source=x"
    assignment = pd.DataFrame(
        {
            "recipient_key": ["k1", "k2", "k3", "k4"],
            "segment": ["new", "new", "loyal", "loyal"],
            "variant_id": ["control", "b", "control", "b"],
        }
    )
    folder = tmp_path_factory.mktemp(f"parity-{request.param}")
    events = folder / f"events.{request.param}"
    if request.param == "csv":
        frame.to_csv(events, index=False)
    else:
        frame.to_parquet(events, index=False)
    assignment.to_parquet(folder / "assignment.parquet", index=False)
    return events, folder / "assignment.parquet"


def test_fixture_covers_every_reason():
    assert set(expected_reasons()) == set(REASONS)


def test_duckdb_quarantines_exactly_the_marked_events(corrupt):
    events, assignment = corrupt
    table = compute_metrics(events, assignment, list(LIBRARY))
    assert table.quarantine_reasons == expected_reasons()
    assert table.events == len(ROWS)
    assert table.unassigned_events == 2
    # the kept copies are the first by time: k1's order is 19.99, not the later 500
    assert table.get("revenue_per_delivered", "control").sum == pytest.approx(19.99 + 5)


def test_spark_gives_the_same_reasons_and_statistics(spark, corrupt):
    events, assignment = corrupt
    duck = compute_metrics(events, assignment, list(LIBRARY))
    on_spark = compute_metrics_spark(events, assignment, list(LIBRARY), spark)
    assert on_spark.quarantine_reasons == duck.quarantine_reasons == expected_reasons()
    assert_same_tables(duck, on_spark)


def test_both_engines_stop_at_the_same_quarantine_share(spark, corrupt):
    """A run on Spark stops where the same run on DuckDB stops (the share limit is one rule)."""
    from loopexp.metrics import QuarantineError, compute

    events, assignment = corrupt
    share = sum(expected_reasons().values()) / len(ROWS)
    for engine in ("duckdb", "spark"):
        with pytest.raises(QuarantineError, match="max_quarantine_share"):
            compute(
                list(LIBRARY),
                events=events,
                assignment=assignment,
                engine=engine,
                spark=spark,
                max_quarantine_share=share * 0.9,
            )
        table = compute(
            list(LIBRARY),
            events=events,
            assignment=assignment,
            engine=engine,
            spark=spark,
            max_quarantine_share=min(1.0, share * 1.1),
        )
        assert table.table.quarantine_reasons == expected_reasons()


# --- issue 28: the send's scope (another campaign's events, events before the assignment) -------

#: (event_id, event_type, ts, recipient_key, campaign_id, reason) beside :data:`ROWS` (whose
#: events have no campaign field, so they pass the campaign rule, and are after the assignment).
SCOPE_ROWS: list[tuple] = [
    ("s1", "open", T, "k3", "spring", None),
    ("s2", "click", T, "k3", " spring ", None),  # trimmed
    ("s3", "open", T, "k4", "", None),  # a blank field is no campaign field
    ("x1", "open", T, "k4", "newsletter", "other_campaign"),
    ("x2", "click", T, "k1", "Spring", "other_campaign"),  # ids are exact
    ("x3", "open", "2026-02-28T23:59:59Z", "k2", "spring", "before_assignment"),
    ("x4", "open", "1772200000", "k2", None, "before_assignment"),  # epoch s, 2026-02-27
    ("x5", "open", "2026-02-28T10:00:00Z", "k2", "newsletter", "other_campaign"),  # first wins
    ("x6", "open", "yesterday", "k2", "newsletter", "missing or unparseable ts"),  # canonical first
]


def test_both_engines_quarantine_the_same_events_outside_the_send(spark, tmp_path):
    from datetime import UTC, datetime

    from loopexp.events.scope import SendScope

    frame = pd.DataFrame([r[:-1] for r in ROWS], columns=COLUMNS).astype("string")
    scoped = pd.DataFrame(
        [r[:-1] for r in SCOPE_ROWS],
        columns=["event_id", "event_type", "ts", "recipient_key", "campaign_id"],
    ).astype("string")
    frame = pd.concat([frame, scoped], ignore_index=True).astype("string")
    frame.insert(1, "provider", "esp")
    events = tmp_path / "events.parquet"
    frame.to_parquet(events, index=False)
    assignment = pd.DataFrame(
        {
            "recipient_key": ["k1", "k2", "k3", "k4"],
            "segment": ["new", "new", "loyal", "loyal"],
            "variant_id": ["control", "b", "control", "b"],
        }
    )
    scope = SendScope(("spring",), datetime(2026, 3, 1, tzinfo=UTC))
    expected = expected_reasons()
    for *_, reason in SCOPE_ROWS:
        if reason is not None:
            expected[reason] = expected.get(reason, 0) + 1
    duck = compute_metrics(events, assignment, list(LIBRARY), scope=scope)
    on_spark = compute_metrics_spark(events, assignment, list(LIBRARY), spark, scope=scope)
    assert on_spark.quarantine_reasons == duck.quarantine_reasons == expected
    assert_same_tables(duck, on_spark)
