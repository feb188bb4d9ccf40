"""Compute metrics where the data lives (DuckDB) and bring back only sufficient statistics.

For every metric, variant and segment the engine returns ``n`` (denominator count), ``sum`` and
``sum_sq`` of the per-recipient numerator: enough for every test in :mod:`loopexp.stats`, a few
hundred numbers whatever the size of the event table. Malformed events are quarantined with a reason
(and optionally written to a Parquet file), never silently dropped.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS
from loopexp.metrics.compile import (
    DUCKDB,
    MetricsError,
    StatColumn,
    events_stats_sql,
    make_plan,
)
from loopexp.metrics.definitions import MetricDef, resolve_metric

ALL_SEGMENTS = "all"

Source = str | Path | pd.DataFrame


class EventsError(ValueError):
    """An event or assignment source that cannot be read as the canonical table."""


@dataclass(frozen=True)
class CovariateSums:
    """Sums of one pre-period covariate ``x`` over a metric's population (regression adjustment).

    Attributes:
        sum: sum of x.
        sum_sq: sum of x².
        cross: sum of x · numerator.
        cross_den: sum of x · ratio denominator (ratio metrics only).
    """

    sum: float
    sum_sq: float
    cross: float
    cross_den: float | None = None


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
        den_sum: ratio metrics: sum of the per-recipient ratio denominator (else None).
        den_sum_sq: ratio metrics: its sum of squares.
        cross_sum: ratio metrics: sum of numerator · denominator (the delta method's covariance).
        covariates: per covariate name, its sums and cross sums with the numerator.
    """

    metric: str
    variant_id: str
    segment: str
    n: int
    sum: float
    sum_sq: float
    den_sum: float | None = None
    den_sum_sq: float | None = None
    cross_sum: float | None = None
    covariates: dict[str, CovariateSums] = field(default_factory=dict, compare=False)

    @property
    def mean(self) -> float:
        """Numerator sum over the population count (NaN when ``n`` is 0)."""
        return self.sum / self.n if self.n else float("nan")

    @property
    def value(self) -> float:
        """The metric's value: the mean, or for a ratio metric numerator sum / denominator sum."""
        if self.den_sum is None:
            return self.mean
        return self.sum / self.den_sum if self.den_sum else float("nan")


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
        """One row per (segment, variant, metric) with n, sum, sum_sq, value (and ratio sums)."""
        columns = ["metric", "variant_id", "segment", "n", "sum", "sum_sq"]
        ratio = ["den_sum", "den_sum_sq", "cross_sum"]
        has_ratio = any(s.den_sum is not None for s in self.stats)
        keep = columns + ratio if has_ratio else columns
        frame = pd.DataFrame([{k: getattr(s, k) for k in keep} for s in self.stats], columns=keep)
        frame["value"] = [s.value for s in self.stats]
        return frame


def compute_metrics(
    events: Source,
    assignment: Source,
    metrics: Sequence[str | MetricDef],
    quarantine_path: str | Path | None = None,
) -> MetricTable:
    """Compute ``metrics`` per variant and segment from canonical events and an assignment.

    ``events`` is a Parquet path (globs allowed) or a DataFrame in the canonical schema;
    ``assignment`` a Parquet/CSV path or DataFrame with ``recipient_key, segment, variant_id``
    (and any covariate columns the metrics name). ``metrics`` are names from the standard library
    (:data:`loopexp.metrics.definitions.LIBRARY`) or :class:`MetricDef` objects (spec-defined).
    """
    defs = [m if isinstance(m, MetricDef) else resolve_metric(m) for m in metrics]
    plan = make_plan(defs)
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
        _check_columns(con, "assignment_src", plan.covariates, assignment)
        query, columns = events_stats_sql(plan, DUCKDB)
        cursor = con.execute(query.sql, query.params)
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()

    stats, assigned = collect_stats(rows, columns)
    return MetricTable(
        stats=stats,
        assigned=assigned,
        events=int(n_events),
        quarantined=sum(reasons.values()),
        quarantine_reasons=reasons,
        unassigned_events=unassigned_events(rows),
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


def unassigned_events(rows: Sequence[dict[str, Any]]) -> int:
    """Valid events of recipients not on the assignment, from a compiled statistics query."""
    return sum(
        int(r["unassigned_events"] or 0)
        for r in rows
        if r["variant_id"] is None and int(r["all_segments"])
    )


def collect_stats(
    rows: Sequence[dict[str, Any]], columns: Sequence[StatColumn]
) -> tuple[list[GroupStats], dict[str, int]]:
    """GroupStats (and recipients per group) from the rows of a compiled statistics query.

    Shared by every engine and input, so DuckDB and Spark return identical records. Raises
    :class:`MetricsError` when a covariate or outcome value is missing in some population.
    """
    if any(r["variant_id"] is None and r["assigned"] for r in rows):
        raise MetricsError(
            "some rows have no variant_id; every recipient of the assignment or outcome table "
            "needs one (drop the rows, or assign them)"
        )
    rows = [r for r in rows if r["variant_id"] is not None]  # the unassigned events' group
    ordered = sorted(
        rows, key=lambda r: (-int(r["all_segments"]), str(r["segment"]), str(r["variant_id"]))
    )
    stats: list[GroupStats] = []
    assigned: dict[str, int] = {}
    by_metric: dict[str, list[StatColumn]] = {}
    for c in columns:
        by_metric.setdefault(c.metric, []).append(c)
    for row in ordered:
        segment = ALL_SEGMENTS if int(row["all_segments"]) else str(row["segment"])
        variant = str(row["variant_id"])
        if segment == ALL_SEGMENTS:
            assigned[variant] = int(row["assigned"])
        for metric, cols in by_metric.items():
            values = {c.stat: row[c.alias] for c in cols}
            if "missing_value" in values:
                if values["missing_value"]:
                    raise MetricsError(
                        f"outcome column {metric!r} has {int(values['missing_value'])} missing "
                        f"value(s) in variant {variant!r}; fill them (0 when nothing happened) or "
                        "drop those rows"
                    )
                continue
            covariates = {}
            for key, value in values.items():
                if key.startswith("cov:") and key.endswith(":missing") and value:
                    raise MetricsError(
                        f"covariate {key.split(':')[1]!r} of metric {metric!r} is missing for "
                        f"{int(value)} recipient(s) of variant {variant!r}; fill or impute it"
                    )
            for name in dict.fromkeys(k.split(":")[1] for k in values if k.startswith("cov:")):
                cross_den = values.get(f"cov:{name}:cross_den")
                covariates[name] = CovariateSums(
                    sum=float(values[f"cov:{name}:sum"] or 0.0),
                    sum_sq=float(values[f"cov:{name}:sum_sq"] or 0.0),
                    cross=float(values[f"cov:{name}:cross"] or 0.0),
                    cross_den=None if cross_den is None else float(cross_den),
                )
            optional = {
                k: (None if k not in values else float(values[k] or 0.0))
                for k in ("den_sum", "den_sum_sq", "cross_sum")
            }
            stats.append(
                GroupStats(
                    metric=metric,
                    variant_id=variant,
                    segment=segment,
                    n=int(values["n"] or 0),
                    # an empty group sums to 0 (SQL gives NULL)
                    sum=float(values["sum"] or 0.0),
                    sum_sq=float(values["sum_sq"] or 0.0),
                    covariates=covariates,
                    **optional,
                )
            )
    return stats, dict(sorted(assigned.items()))
