"""Compute metrics where the data lives (DuckDB) and bring back only sufficient statistics.

For every metric, variant and segment the engine returns ``n`` (denominator count), ``sum`` and
``sum_sq`` of the per-recipient numerator: enough for every test in :mod:`loopexp.stats`, a few
hundred numbers whatever the size of the event table. Malformed events are quarantined with a reason
(and optionally written to a Parquet file), never silently dropped.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS
from loopexp.metrics.definitions import HOLDOUT, OUTCOMES, get_metric

ALL_SEGMENTS = "all"

Source = str | Path | pd.DataFrame


class EventsError(ValueError):
    """An event or assignment source that cannot be read as the canonical table."""


@dataclass(frozen=True)
class GroupStats:
    """Sufficient statistics of one metric in one variant (and segment).

    Attributes:
        metric: metric name.
        variant_id: the variant (or ``holdout``).
        segment: lifecycle segment, or ``"all"`` for the whole audience.
        n: recipients in the metric's denominator population.
        sum: sum of the per-recipient numerator (successes, for a proportion).
        sum_sq: sum of squares of the numerator (equals ``sum`` for a proportion).
    """

    metric: str
    variant_id: str
    segment: str
    n: int
    sum: float
    sum_sq: float

    @property
    def mean(self) -> float:
        """The metric's value: numerator sum over denominator (NaN when ``n`` is 0)."""
        return self.sum / self.n if self.n else float("nan")


@dataclass
class MetricTable:
    """What the engine returns: sufficient statistics plus the counts an analysis must report."""

    stats: list[GroupStats]
    assigned: dict[str, int]
    """Recipients per group on the assignment (holdout included): the SRM input."""
    events: int
    quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    unassigned_events: int = 0
    """Valid events whose recipient is not on the assignment (other campaigns, seeds, typos)."""
    caps: dict[str, float] = field(default_factory=dict)
    """Per capped metric, the value its per-recipient numerator was winsorised at."""

    def get(self, metric: str, variant_id: str, segment: str = ALL_SEGMENTS) -> GroupStats:
        """The statistics of one metric in one variant and segment."""
        for s in self.stats:
            if (s.metric, s.variant_id, s.segment) == (metric, variant_id, segment):
                return s
        raise KeyError(f"no statistics for metric={metric} variant={variant_id} segment={segment}")

    @property
    def segments(self) -> list[str]:
        """Segments present, without the ``all`` roll-up."""
        return sorted({s.segment for s in self.stats} - {ALL_SEGMENTS})

    def to_frame(self) -> pd.DataFrame:
        """One row per (segment, variant, metric) with n, sum, sum_sq and value."""
        frame = pd.DataFrame([s.__dict__ for s in self.stats])
        frame["value"] = frame["sum"] / frame["n"].where(frame["n"] > 0)
        return frame


def compute_metrics(
    events: Source,
    assignment: Source,
    metrics: Sequence[str],
    quarantine_path: str | Path | None = None,
    caps: Mapping[str, float] | None = None,
) -> MetricTable:
    """Compute ``metrics`` per variant and segment from canonical events and an assignment.

    ``events`` is a Parquet path (globs allowed) or a DataFrame in the canonical schema;
    ``assignment`` a Parquet/CSV path or DataFrame with ``recipient_key, segment, variant_id``.
    ``caps`` maps mean metrics to a percentile (e.g. 0.99): their per-recipient numerator is
    winsorised at that percentile of its non-zero values among mailed recipients in the metric's
    denominator, pooled over arms (one cap for all arms, so the comparison stays fair).
    """
    defs = [get_metric(m) for m in metrics]
    con = duckdb.connect()
    try:
        _attach(con, "raw_events", events, "events")
        _attach(con, "assignment_src", assignment, "assignment")
        _check_columns(
            con, "assignment_src", ("recipient_key", "segment", "variant_id"), assignment
        )
        for statement in _validation_sql(con, events):
            con.execute(statement)
        counts = dict(
            con.execute(
                "SELECT quarantine_reason, count(*) FROM checked_events GROUP BY 1"
            ).fetchall()
        )
        n_events = sum(counts.values())
        (duplicates,) = con.execute("SELECT count(*) FROM dup_rows WHERE dup_rank > 1").fetchone()
        reasons = {k: v for k, v in counts.items() if k is not None}
        if duplicates:
            reasons[DUPLICATE] = duplicates
        reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
        if quarantine_path is not None and reasons:
            con.execute(
                f"COPY (SELECT * FROM quarantined_events) TO '{_sql_path(quarantine_path)}' "
                "(FORMAT parquet)"
            )
        con.execute(_per_recipient_sql())
        (unassigned,) = con.execute(
            "SELECT coalesce(sum(p.n_events), 0) FROM per_recipient p "
            "ANTI JOIN assignment_src a USING (recipient_key)"
        ).fetchone()
        cap_values = _cap_values(con, defs, caps or {})
        rows = con.execute(_aggregate_sql(defs, cap_values)).fetchdf()
    finally:
        con.close()

    stats: list[GroupStats] = []
    assigned: dict[str, int] = {}
    for row in rows.itertuples(index=False):
        segment = ALL_SEGMENTS if row.all_segments else str(row.segment)
        if segment == ALL_SEGMENTS:
            assigned[str(row.variant_id)] = int(row.assigned)
        for m in defs:
            n = int(getattr(row, f"{m.name}__n"))
            stats.append(
                GroupStats(
                    metric=m.name,
                    variant_id=str(row.variant_id),
                    segment=segment,
                    n=n,
                    sum=float(getattr(row, f"{m.name}__sum") or 0.0),
                    sum_sq=float(getattr(row, f"{m.name}__sum_sq") or 0.0),
                )
            )
    return MetricTable(
        stats=stats,
        assigned=dict(sorted(assigned.items())),
        events=int(n_events),
        quarantined=sum(reasons.values()),
        quarantine_reasons=reasons,
        unassigned_events=int(unassigned),
        caps=cap_values,
    )


def _sql_path(path: str | Path) -> str:
    return str(path).replace("'", "''")


def require_source(source: Source, what: str) -> None:
    """Raise :class:`EventsError` when a path (or glob) ``source`` matches no file."""
    if not isinstance(source, pd.DataFrame) and not glob.glob(str(source)):
        raise EventsError(
            f"{source}: file not found; no file matches this path (expected Parquet or CSV "
            f"for the {what})"
        )


def _attach(con: duckdb.DuckDBPyConnection, name: str, source: Source, what: str) -> None:
    require_source(source, what)
    if isinstance(source, pd.DataFrame):
        con.register(name, source)
        return
    path = str(source)
    reader = "read_csv_auto" if path.endswith((".csv", ".csv.gz")) else "read_parquet"
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM {reader}('{_sql_path(path)}')")


def _columns(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]


def _check_columns(
    con: duckdb.DuckDBPyConnection, name: str, required: Sequence[str], source: Source
) -> None:
    missing = [c for c in required if c not in _columns(con, name)]
    if missing:
        where = "DataFrame" if isinstance(source, pd.DataFrame) else str(source)
        raise EventsError(
            f"{where}: missing required column(s) {missing}; has {_columns(con, name)}. "
            "Rename or derive the columns of the canonical table (loopexp.events.EVENT_SCHEMA: "
            "event_id, provider, event_type, ts, recipient_key, ...)."
        )


_DUCK_TYPES = {
    "string": "VARCHAR",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
    "bool": "BOOLEAN",
    "double": "DOUBLE",
}


DUPLICATE = "duplicate (provider, event_id)"


def _validation_sql(con: duckdb.DuckDBPyConnection, source: Source) -> list[str]:
    """Statements defining ``checked_events``, ``valid_events`` and ``quarantined_events``.

    Views, not copies: DuckDB reads only the columns a query needs from Parquet. Duplicates of
    ``(provider, event_id)`` among otherwise valid events are ranked by time (the first is kept);
    only keys that actually repeat are ranked, so the common case costs one hash aggregate.
    """
    _check_columns(con, "raw_events", REQUIRED_COLUMNS, source)
    present = set(_columns(con, "raw_events"))
    select = ", ".join(
        f"TRY_CAST({f.name} AS {_DUCK_TYPES[str(f.type)]}) AS {f.name}"
        if f.name in present
        else f"NULL::{_DUCK_TYPES[str(f.type)]} AS {f.name}"
        for f in EVENT_SCHEMA
    )
    known = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    return [
        f"""CREATE VIEW checked_events AS
            SELECT *,
                CASE
                    WHEN event_id IS NULL OR event_id = '' THEN 'missing event_id'
                    WHEN recipient_key IS NULL OR recipient_key = '' THEN 'missing recipient_key'
                    WHEN ts IS NULL THEN 'missing or unparseable ts'
                    WHEN event_type IS NULL OR event_type NOT IN ({known})
                        THEN 'unknown event_type'
                    WHEN event_type = 'order' AND (revenue IS NULL OR revenue < 0)
                        THEN 'order without a valid revenue'
                END AS quarantine_reason
            FROM (SELECT {select} FROM raw_events)""",
        """CREATE TEMP TABLE dup_keys AS
            SELECT coalesce(provider, '') AS provider_key, event_id FROM checked_events
            WHERE quarantine_reason IS NULL GROUP BY ALL HAVING count(*) > 1""",
        """CREATE TEMP TABLE dup_rows AS
            SELECT c.*, row_number() OVER (
                PARTITION BY coalesce(c.provider, ''), c.event_id ORDER BY c.ts, c.recipient_key
            ) AS dup_rank
            FROM checked_events c SEMI JOIN dup_keys d
                ON d.provider_key = coalesce(c.provider, '') AND d.event_id = c.event_id
            WHERE c.quarantine_reason IS NULL""",
        """CREATE VIEW valid_events AS
            SELECT * EXCLUDE (quarantine_reason) FROM checked_events c
            WHERE quarantine_reason IS NULL AND NOT EXISTS (
                SELECT 1 FROM dup_keys d
                WHERE d.provider_key = coalesce(c.provider, '') AND d.event_id = c.event_id)
            UNION ALL
            SELECT * EXCLUDE (quarantine_reason, dup_rank) FROM dup_rows WHERE dup_rank = 1""",
        f"""CREATE VIEW quarantined_events AS
            SELECT * FROM checked_events WHERE quarantine_reason IS NOT NULL
            UNION ALL
            SELECT * EXCLUDE (dup_rank) REPLACE ('{DUPLICATE}' AS quarantine_reason)
            FROM dup_rows WHERE dup_rank > 1""",
    ]


def _per_recipient_sql() -> str:
    outcome_cols = ",\n".join(f"{expr} AS {name}" for name, expr in OUTCOMES.items())
    return f"""
        CREATE TEMP TABLE per_recipient AS
        SELECT recipient_key, count(*) AS n_events, {outcome_cols}
        FROM valid_events GROUP BY recipient_key
    """


def _cap_values(
    con: duckdb.DuckDBPyConnection, defs: Sequence, caps: Mapping[str, float]
) -> dict[str, float]:
    """The winsorisation value of each capped mean metric (see :func:`compute_metrics`)."""
    out: dict[str, float] = {}
    for m in defs:
        if m.name not in caps or m.kind != "mean":
            continue
        cond = "" if m.denominator == "sent" else "AND p.delivered"
        (value,) = con.execute(
            f"SELECT quantile_cont(p.{m.numerator}, ?) FROM per_recipient p "
            f"SEMI JOIN assignment_src a ON a.recipient_key = p.recipient_key "
            f"AND a.variant_id <> '{HOLDOUT}' WHERE p.{m.numerator} > 0 {cond}",
            [float(caps[m.name])],
        ).fetchone()
        if value is not None:
            out[m.name] = float(value)
    return out


def _aggregate_sql(defs: Sequence, caps: Mapping[str, float] | None = None) -> str:
    joined_cols = ",\n".join(f"coalesce(p.{name}, 0)::DOUBLE AS {name}" for name in OUTCOMES)
    aggregates = []
    for m in defs:
        # Holdout recipients were not mailed: they are in no denominator, even with a stray event.
        cond = "sent" if m.denominator == "sent" else "sent AND delivered > 0"
        num = m.numerator
        if caps and m.name in caps:
            num = f"least({num}, {float(caps[m.name])!r}::DOUBLE)"
        aggregates += [
            f'count(*) FILTER (WHERE {cond}) AS "{m.name}__n"',
            # coalesce: an empty group sums to 0 (SQL gives NULL, which fetchdf turns into NaN).
            f'coalesce(sum({num}) FILTER (WHERE {cond}), 0) AS "{m.name}__sum"',
            f"coalesce(sum({num} * {num}) FILTER (WHERE {cond}), 0) "
            f'AS "{m.name}__sum_sq"',
        ]
    return f"""
        WITH outcomes AS (
            SELECT a.variant_id, a.segment, a.variant_id <> '{HOLDOUT}' AS sent, {joined_cols}
            FROM assignment_src a LEFT JOIN per_recipient p USING (recipient_key)
        )
        SELECT variant_id, segment, GROUPING(segment) = 1 AS all_segments, count(*) AS assigned,
            {", ".join(aggregates)}
        FROM outcomes
        GROUP BY GROUPING SETS ((variant_id), (variant_id, segment))
        ORDER BY all_segments DESC, segment, variant_id
    """
