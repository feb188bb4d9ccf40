"""Per-recipient outcomes of a flow test, from canonical events and a flow assignment, in DuckDB.

A flow test is judged per recipient from their entry into the split (intent-to-treat), with
their own follow-up time, so the engine returns one row per assigned recipient (days to the
conversion event, days to an unsubscribe, messages sent within the window) and a per-step funnel
per arm: the censoring-aware statistics need times, not only sums. The events go through the
same validation as every metric (malformed ones quarantined with a reason and counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from loopexp.core.errors import EventsError
from loopexp.core.keys import redact_addresses
from loopexp.core.sql import sql_escape
from loopexp.events.schema import REQUIRED_COLUMNS
from loopexp.events.scope import SendScope
from loopexp.events.validation import DUPLICATE
from loopexp.metrics.checks import check_assignment
from loopexp.metrics.engine import check_quarantine_share
from loopexp.metrics.sources import (
    ASSIGNMENT_COLUMNS,
    Source,
    attach,
    columns_of,
    connect,
    first_line,
    source_name,
)
from loopexp.metrics.validated import quarantine_select, validate_events

FLOW_ASSIGNMENT_COLUMNS = (*ASSIGNMENT_COLUMNS, "entered_at")
FUNNEL_EVENTS = ("send", "delivered", "open", "click", "unsubscribe")


@dataclass
class FlowData:
    """What a flow analysis needs from the engine (small: one row per recipient, a funnel)."""

    recipients: pd.DataFrame
    """``recipient_key, segment, variant_id, flow_version, followup`` (days from entry to the
    look), ``t_convert`` and ``t_unsubscribe`` (days from entry; NaN: none yet), ``sends``
    (messages sent within the window)."""
    funnel: pd.DataFrame
    """``variant_id, step_id`` and recipients per event type at that step, and ``ordered``:
    those sent at the step who converted within the window."""
    as_of: pd.Timestamp
    events: int
    quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    unassigned_events: int = 0


def flow_outcomes(
    events: Source,
    assignment: Source,
    window_days: float,
    conversion_event: str = "order",
    quarantine_path: str | Path | None = None,
    *,
    as_of: pd.Timestamp | None = None,
    segments: list[str] | None = None,
    variants: list[str] | None = None,
    max_quarantine_share: float | None = None,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
    scope: SendScope | None = None,
) -> FlowData:
    """Per-recipient times and the per-step funnel of a flow test (see :class:`FlowData`).

    ``as_of``: the time of the look (default: the latest event or entry). Bad inputs raise
    :class:`EventsError` naming the file and what to do, as :func:`compute_metrics` does.
    ``scope``: quarantine another campaign's events (:mod:`loopexp.events.scope`), as there.
    """
    with connect(memory_limit, temp_directory) as (con, _limit):
        try:
            return _outcomes(
                con,
                events,
                assignment,
                window_days,
                conversion_event,
                quarantine_path,
                as_of,
                segments,
                variants,
                max_quarantine_share,
                scope,
            )
        except duckdb.Error as exc:
            raise EventsError(
                f"{source_name(events)} (events) with {source_name(assignment)} (flow "
                f"assignment): DuckDB could not process the inputs: "
                f"{redact_addresses(first_line(exc))}. A file may be corrupt or not in the "
                "canonical schema: export it again, or convert it with `loopexp ingest`."
            ) from None


def _outcomes(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    assignment: Source,
    window: float,
    conversion_event: str,
    quarantine_path: str | Path | None,
    as_of: pd.Timestamp | None,
    segments: list[str] | None,
    variants: list[str] | None,
    max_quarantine_share: float | None,
    scope: SendScope | None = None,
) -> FlowData:
    attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
    attach(con, "assignment_raw", assignment, "flow assignment", FLOW_ASSIGNMENT_COLUMNS)
    version = "flow_version" if "flow_version" in columns_of(con, "assignment_raw") else "NULL"
    con.execute(
        "CREATE VIEW assignment_src AS SELECT "
        + ", ".join(f"TRY_CAST({c} AS VARCHAR) AS {c}" for c in ASSIGNMENT_COLUMNS)
        + f", TRY_CAST(entered_at AS TIMESTAMPTZ) AS entered_at, {version} AS flow_version"
        " FROM assignment_raw"
    )
    (bad_entries,) = con.execute(
        "SELECT count(*) FROM assignment_src WHERE entered_at IS NULL"
    ).fetchone()
    if bad_entries:
        raise EventsError(
            f"{source_name(assignment)}: {bad_entries} row(s) without a valid entered_at; a flow "
            "assignment records when each recipient reached the split (loopexp.assignment.flow)"
        )
    check_assignment(con, assignment, segments, variants)
    n_events, reasons = _validate(con, events, quarantine_path, max_quarantine_share, scope)
    if as_of is None:
        (as_of,) = con.execute(
            "SELECT greatest((SELECT max(ts) FROM valid_events), "
            "(SELECT max(entered_at) FROM assignment_src))"
        ).fetchone()
    params = {"conv": conversion_event, "w": float(window), "as_of": pd.Timestamp(as_of)}
    con.execute(_PER_RECIPIENT, params)
    recipients = con.execute(
        "SELECT * EXCLUDE (entered_at) FROM per_recipient ORDER BY recipient_key"
    ).df()
    funnel = con.execute(_FUNNEL, {"w": float(window)}).df()
    (unassigned,) = con.execute(
        "SELECT count(*) FROM valid_events e ANTI JOIN assignment_src a USING (recipient_key)"
    ).fetchone()
    return FlowData(
        recipients=recipients,
        funnel=funnel,
        as_of=pd.Timestamp(as_of),
        events=n_events,
        quarantined=sum(reasons.values()),
        quarantine_reasons=reasons,
        unassigned_events=int(unassigned),
    )


_DAYS = "epoch({a} - {b}) / 86400.0"
_PER_RECIPIENT = f"""
CREATE TEMP TABLE per_recipient AS
SELECT a.recipient_key, a.segment, a.variant_id, a.flow_version, a.entered_at,
    {_DAYS.format(a="$as_of::TIMESTAMPTZ", b="a.entered_at")} AS followup,
    {_DAYS.format(a="min(e.ts) FILTER (WHERE e.event_type = $conv)", b="a.entered_at")}
        AS t_convert,
    {_DAYS.format(a="min(e.ts) FILTER (WHERE e.event_type = 'unsubscribe')", b="a.entered_at")}
        AS t_unsubscribe,
    count(*) FILTER (
        WHERE e.event_type = 'send' AND {_DAYS.format(a="e.ts", b="a.entered_at")} < $w
    ) AS sends
FROM assignment_src a
LEFT JOIN valid_events e
    ON e.recipient_key = a.recipient_key AND e.ts >= a.entered_at AND e.ts <= $as_of::TIMESTAMPTZ
GROUP BY a.recipient_key, a.segment, a.variant_id, a.flow_version, a.entered_at
"""
_FUNNEL = f"""
SELECT a.variant_id, e.step_id,
    {
    ", ".join(
        f"count(DISTINCT a.recipient_key) FILTER (WHERE e.event_type = '{t}') AS {t}"
        for t in FUNNEL_EVENTS
    )
},
    count(DISTINCT a.recipient_key) FILTER (
        WHERE e.event_type = 'send' AND a.t_convert <= $w
    ) AS ordered
FROM per_recipient a JOIN valid_events e
    ON e.recipient_key = a.recipient_key AND e.ts >= a.entered_at
WHERE e.step_id IS NOT NULL
GROUP BY a.variant_id, e.step_id ORDER BY a.variant_id, min(e.ts)
"""


def _validate(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    quarantine_path: str | Path | None,
    max_quarantine_share: float | None,
    scope: SendScope | None = None,
) -> tuple[int, dict[str, int]]:
    """Validate the events (``valid_events``); the event count and quarantine reasons' counts."""
    has_candidates = validate_events(con, scope)
    counts = dict(
        con.execute("SELECT quarantine_reason, n FROM event_summary WHERE by_reason").fetchall()
    )
    n_events = int(sum(counts.values()))
    reasons = {k: int(v) for k, v in counts.items() if k is not None}
    if has_candidates:
        (duplicates,) = con.execute(
            "SELECT (SELECT sum(n) FROM event_summary WHERE NOT by_reason) "
            "- (SELECT count(*) FROM dup_kept)"
        ).fetchone()
        if duplicates:
            reasons[DUPLICATE] = int(duplicates)
    if quarantine_path is not None and reasons:
        con.execute(
            f"COPY ({quarantine_select(con)}) TO '{sql_escape(quarantine_path)}' (FORMAT parquet)"
        )
    check_quarantine_share(events, n_events, reasons, max_quarantine_share, quarantine_path)
    return n_events, reasons


__all__ = ["FlowData", "flow_outcomes"]
