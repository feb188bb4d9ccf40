"""Per-recipient inputs of policy learning, computed in the engine where the events live (issue 27).

- :func:`recipient_outcomes`: one row per assigned recipient with the spec's primary metric's
  per-recipient value (``y``), from the validated events (malformed ones quarantined and counted,
  exactly as for the metrics), beside the assignment's columns (``propensity`` when recorded).
- :func:`history_features`: pre-treatment features from an event history before a date:
  ``recency_days`` (days since the last human open or click; 9999 for none), ``frequency`` (human
  clicks in the 90 days before), ``tenure_days`` (days since the first event), ``past_click_hour``
  (the most frequent hour of the human clicks, UTC; -1 for none) and ``machine_open`` (1 when any
  open was a machine open, e.g. Apple Mail Privacy Protection).

Only recipient-level rows leave DuckDB: these are model inputs, not statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from loopexp.core.errors import EventsError
from loopexp.core.sql import sql_string
from loopexp.events.schema import REQUIRED_COLUMNS
from loopexp.events.validation import DUCKDB
from loopexp.metrics.compile import make_plan, per_recipient_sql
from loopexp.metrics.definitions import MetricDef, resolve_metric
from loopexp.metrics.sources import ASSIGNMENT_COLUMNS, Source, attach, connect
from loopexp.metrics.validated import validate_events

FEATURE_COLUMNS = ("recency_days", "frequency", "tenure_days", "past_click_hour", "machine_open")
#: ``recency_days`` of a recipient with no human open or click in the history.
NO_RECENCY = 9999


@dataclass(frozen=True)
class RecipientOutcomes:
    """Assigned recipients with ``y``; how many events were valid and quarantined."""

    table: pd.DataFrame
    events: int
    quarantined: int
    assigned: int = 0
    """Recipients in the assignment, those left out by ``drop_variant`` included."""


def recipient_outcomes(
    events: Source,
    assignment: Source,
    metric: str | MetricDef = "click_rate",
    memory_limit: str | None = None,
    columns: Sequence[str] | None = None,
    drop_variant: str | None = None,
    extra: Sequence[MetricDef] = (),
) -> RecipientOutcomes:
    """Each assigned recipient's value of ``metric``'s numerator (0 without events) as ``y``.

    The value is per *assigned* recipient (a bounce counts as no click): the policy's effect on
    who is reached is part of its value. Ratio metrics have no per-recipient value and are refused.
    ``columns``: the assignment columns to return (those it has; None: all) and ``drop_variant``
    a group to leave in DuckDB (the holdout): at 10 M recipients only what the caller uses
    reaches pandas. ``extra``: more per-recipient metrics (a policy's guardrails), computed in the
    same pass as columns ``y:<name>``.
    """
    d = metric if isinstance(metric, MetricDef) else resolve_metric(metric)
    for m in (d, *extra):
        if m.kind == "ratio":
            raise EventsError(
                f"metric {m.name!r} is a ratio: a policy needs a per-recipient outcome; use a "
                "proportion or mean metric (e.g. click_rate) as the spec's primary metric"
            )
    plan = make_plan([d, *extra])
    alias = plan.alias(d.numerator)
    more = "".join(
        f", coalesce(CAST(r.{plan.alias(m.numerator)} AS DOUBLE), 0.0) AS " + '"y:' + m.name + '"'
        for m in extra
    )
    with connect(memory_limit, None) as (con, _):
        attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
        attach(con, "assignment_raw", assignment, "assignment", ASSIGNMENT_COLUMNS)
        validate_events(con)
        (n_events, quarantined, assigned) = con.execute(
            "SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM quarantined_events), "
            "(SELECT count(*) FROM assignment_raw)"
        ).fetchone()
        have = [row[0] for row in con.execute("DESCRIBE assignment_raw").fetchall()]
        wanted = have if columns is None else [c for c in have if c in set(columns)]
        selected = ", ".join('a."' + c.replace('"', '""') + '"' for c in wanted)
        where = ""
        if drop_variant is not None:
            where = f" WHERE CAST(a.variant_id AS VARCHAR) <> {sql_string(drop_variant)}"
        query = per_recipient_sql(plan, DUCKDB)
        table = con.execute(
            f"SELECT {selected}, coalesce(CAST(r.{alias} AS DOUBLE), 0.0) AS y{more} "
            f"FROM assignment_raw a "
            f"LEFT JOIN ({query.sql}) r ON CAST(a.recipient_key AS VARCHAR) = r.recipient_key"
            f"{where} ORDER BY a.recipient_key",  # one order: the folds permute the rows
            query.params,
        ).df()
    return RecipientOutcomes(table, int(n_events), int(quarantined), int(assigned))


def history_features(
    events: Source, as_of: datetime, memory_limit: str | None = None
) -> pd.DataFrame:
    """Pre-treatment features per recipient from the valid events strictly before ``as_of``.

    One row per recipient with any event in the history: ``recipient_key`` and
    :data:`FEATURE_COLUMNS`. Recipients absent from the history have no row (the caller fills
    :func:`no_history`).
    """
    cut = sql_string(pd.Timestamp(as_of).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S"))
    human_click = "event_type = 'click' AND coalesce(is_bot_click, false) = false"
    human_touch = (
        f"(({human_click}) OR (event_type = 'open' AND coalesce(is_machine_open, false) = false))"
    )
    sql = f"""
        WITH h AS (SELECT * FROM valid_events WHERE ts < TIMESTAMPTZ {cut})
        SELECT recipient_key,
          coalesce(date_diff('day', max(CASE WHEN {human_touch} THEN ts END),
                             TIMESTAMPTZ {cut}), {NO_RECENCY}) AS recency_days,
          count(*) FILTER (WHERE {human_click}
                           AND ts >= TIMESTAMPTZ {cut} - INTERVAL 90 DAY) AS frequency,
          date_diff('day', min(ts), TIMESTAMPTZ {cut}) AS tenure_days,
          coalesce(mode(hour(ts)) FILTER (WHERE {human_click}), -1) AS past_click_hour,
          CAST(bool_or(event_type = 'open' AND coalesce(is_machine_open, false)) AS INTEGER)
            AS machine_open
        FROM h GROUP BY recipient_key ORDER BY recipient_key"""
    with connect(memory_limit, None) as (con, _):
        attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
        validate_events(con)
        frame = con.execute(sql).df()
    return frame.astype({c: float for c in FEATURE_COLUMNS})


def no_history() -> dict[str, float]:
    """Feature values of a recipient without any event in the history."""
    return {
        "recency_days": float(NO_RECENCY),
        "frequency": 0.0,
        "tenure_days": 0.0,
        "past_click_hour": -1.0,
        "machine_open": 0.0,
    }


def read_feature_table(path: str | Path) -> pd.DataFrame:
    """A feature table (Parquet or CSV) with ``recipient_key`` and numeric feature columns."""
    path = Path(path)
    if not path.is_file():
        raise EventsError(f"{path}: no such feature table; give a Parquet or CSV file")
    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if "recipient_key" not in frame:
        raise EventsError(
            f"{path}: a feature table needs a recipient_key column; has {list(frame)}"
        )
    frame["recipient_key"] = frame["recipient_key"].astype(str)
    for column in frame.columns.drop("recipient_key"):
        if column == "segment":
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise EventsError(
                f"{path}: column {column!r} must be numeric; row {row} has "
                f"{frame[column][bad].iloc[0]!r}"
            )
        frame[column] = values.astype(float)
    return frame
