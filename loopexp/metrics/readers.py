"""Each recipient's reader class before a send, from earlier campaigns' events (issue 28, MPP).

Apple Mail Privacy Protection fetches every image, so a proxy reader's human opens are invisible.
Whether a recipient's opens are visible is fixed *before* the send (a pre-treatment covariate,
like :func:`loopexp.metrics.features.history_features`), from the valid events strictly before it:

- ``non_proxy``: at least one human open (``is_machine_open`` false or null) was seen;
- ``proxy``: opens were seen, all of them machine opens;
- ``unknown``: no open seen (absent from the history, or never opened).

A click alone does not classify: an Apple Mail reader clicks too, with opens still hidden.
:func:`opens_table` adds this send's human and machine opens per assigned recipient, the input of
:func:`loopexp.analysis.opens.analyze_opens`. Only recipient-level rows leave DuckDB.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from loopexp.core.sql import sql_string
from loopexp.events.schema import REQUIRED_COLUMNS
from loopexp.metrics.sources import ASSIGNMENT_COLUMNS, Source, attach, connect
from loopexp.metrics.validated import validate_events

_HUMAN_OPEN = "event_type = 'open' AND coalesce(is_machine_open, false) = false"
_MACHINE_OPEN = "event_type = 'open' AND coalesce(is_machine_open, false)"


def reader_classes(
    history: Source, before: datetime, memory_limit: str | None = None
) -> pd.DataFrame:
    """``recipient_key`` and ``reader_class`` of each recipient with an open before ``before``."""
    cut = sql_string(pd.Timestamp(before).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S"))
    sql = f"""
        SELECT recipient_key,
          CASE WHEN bool_or({_HUMAN_OPEN}) THEN 'non_proxy' ELSE 'proxy' END AS reader_class
        FROM valid_events
        WHERE ts < TIMESTAMPTZ {cut} AND event_type = 'open'
        GROUP BY recipient_key ORDER BY recipient_key"""
    with connect(memory_limit, None) as (con, _):
        attach(con, "raw_events", history, "event history", REQUIRED_COLUMNS)
        validate_events(con)
        return con.execute(sql).df()


def first_send(events: Source, memory_limit: str | None = None) -> datetime | None:
    """The time of the send's first valid event (the cut of its history), ``None`` without any."""
    with connect(memory_limit, None) as (con, _):
        attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
        validate_events(con)
        (first,) = con.execute("SELECT min(ts) FROM valid_events").fetchone()
    return None if first is None else pd.Timestamp(first).tz_convert("UTC").to_pydatetime()


def opens_table(
    events: Source,
    assignment: Source,
    history: Source,
    before: datetime | None = None,
    memory_limit: str | None = None,
) -> pd.DataFrame:
    """One row per assigned recipient: variant, reader_class, human_opens, machine_opens.

    ``before`` (default: the send's first event) cuts the history, so this send's own opens never
    classify its recipients even when the history file includes them.
    """
    before = before or first_send(events, memory_limit)
    readers = (
        reader_classes(history, before, memory_limit)
        if before is not None
        else pd.DataFrame(
            {"recipient_key": pd.Series(dtype=str), "reader_class": pd.Series(dtype=str)}
        )
    )
    with connect(memory_limit, None) as (con, _):
        attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
        attach(con, "assignment_raw", assignment, "assignment", ASSIGNMENT_COLUMNS)
        validate_events(con)
        con.register("readers", readers)
        return con.execute(
            f"""
            WITH o AS (
              SELECT recipient_key, count(*) FILTER (WHERE {_HUMAN_OPEN}) AS human_opens,
                count(*) FILTER (WHERE {_MACHINE_OPEN}) AS machine_opens
              FROM valid_events WHERE event_type = 'open' GROUP BY recipient_key)
            SELECT CAST(a.recipient_key AS VARCHAR) AS recipient_key,
              CAST(a.variant_id AS VARCHAR) AS variant,
              coalesce(r.reader_class, 'unknown') AS reader_class,
              coalesce(o.human_opens, 0) AS human_opens,
              coalesce(o.machine_opens, 0) AS machine_opens
            FROM assignment_raw a
            LEFT JOIN readers r ON CAST(a.recipient_key AS VARCHAR) = r.recipient_key
            LEFT JOIN o ON CAST(a.recipient_key AS VARCHAR) = o.recipient_key
            ORDER BY 1"""
        ).df()


def machine_share_by_campaign(
    history: Source, before: datetime, memory_limit: str | None = None
) -> pd.DataFrame:
    """Per earlier campaign, oldest first: campaign_id, first_at, opens, machine_opens.

    The MPP-share monitor's series: a jump in the share of machine opens (Apple's 2024 prefetch
    change) means open rates are not comparable across it.
    """
    cut = sql_string(pd.Timestamp(before).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S"))
    sql = f"""
        SELECT coalesce(CAST(campaign_id AS VARCHAR), '(none)') AS campaign_id,
          min(ts) AS first_at, count(*) AS opens,
          count(*) FILTER (WHERE coalesce(is_machine_open, false)) AS machine_opens
        FROM valid_events WHERE ts < TIMESTAMPTZ {cut} AND event_type = 'open'
        GROUP BY 1 ORDER BY first_at, campaign_id"""
    with connect(memory_limit, None) as (con, _):
        attach(con, "raw_events", history, "event history", REQUIRED_COLUMNS)
        validate_events(con)
        return con.execute(sql).df()
