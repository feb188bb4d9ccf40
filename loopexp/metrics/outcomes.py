"""Outcome tables: one row per recipient with variant, segment, metric columns and covariates.

How many teams hold their data (a warehouse table per campaign) and how experiments such as
Hillstrom's come. No events, so no quarantine: the table is read as is, every value it uses must be
present (a missing value is an error naming the column and variant, never a silent zero), and only
sufficient statistics leave the engine, exactly as from events.

Columns: ``variant_id`` (required), ``segment`` (optional: adds per-segment rows), the metric
columns the definitions name (``numerator.column``; a standard metric such as ``click_rate`` reads
the column named after its measure, ``clicked_human``), ``delivered`` / ``opened`` (0/1) when a
metric's population needs them, and covariates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import pandas as pd

from loopexp.events.validation import DUCKDB
from loopexp.metrics.compile import (
    MetricsError,
    Plan,
    make_plan,
    with_cap,
)
from loopexp.metrics.definitions import MetricDef, resolve_metric
from loopexp.metrics.engine import MetricTable, cap_values_of, collect_stats
from loopexp.metrics.outcome_sql import (
    outcome_cap_quantiles_sql,
    outcome_columns_needed,
    outcome_stats_sql,
)
from loopexp.metrics.sources import Source, attach, columns_of, connect


def resolve(metrics: Sequence[str | MetricDef]) -> list[MetricDef]:
    """Metric names (standard library) or definitions, as definitions."""
    return [m if isinstance(m, MetricDef) else resolve_metric(m) for m in metrics]


def check_outcome_columns(
    present: Sequence[str], defs: Sequence[MetricDef], source: Source
) -> None:
    """Raise :class:`MetricsError` naming the table and metric when a needed column is absent."""
    need = outcome_columns_needed(make_plan(defs))
    missing = {c: why for c, why in need.items() if c not in present}
    if missing:
        where = "outcome table (DataFrame)" if isinstance(source, pd.DataFrame) else str(source)
        detail = "; ".join(f"{c!r} (for {why})" for c, why in missing.items())
        raise MetricsError(
            f"{where}: missing column(s) {detail}; the table has {list(present)}. Add the "
            "columns, or point the metric at an existing one with `numerator: {column: NAME}`."
        )


def compute_outcome_metrics(
    outcomes: Source,
    metrics: Sequence[str | MetricDef],
    caps: Mapping[str, float] | None = None,
) -> MetricTable:
    """Sufficient statistics per variant (and segment) of ``metrics`` from an outcome table.

    Args:
        outcomes: a Parquet/CSV path (globs allowed) or a DataFrame, one row per recipient.
        metrics: standard metric names or :class:`MetricDef` objects (e.g. ``spec.metric_defs``).
        caps: mean metric → percentile (e.g. 0.99) at which its numerator column is winsorised:
            the percentile of its non-zero values among the rows of the metric's population,
            pooled over arms, as :func:`loopexp.metrics.compute_metrics` does for events.

    Returns:
        A :class:`MetricTable` with ``events`` and ``quarantined`` 0 (an outcome table has no
        events) and ``assigned`` counting the table's rows per variant.

    Raises:
        MetricsError: a needed column is missing, or a used value is NULL.
    """
    defs = resolve(metrics)
    plan = make_plan(defs)
    with connect(None, None) as (con, _):
        attach(con, "outcomes_src", outcomes, "outcome table", ("variant_id",))
        present = columns_of(con, "outcomes_src")
        check_outcome_columns(present, defs, outcomes)
        cap_values = _outcome_caps(con, plan, caps or {}, present)
        if cap_values:
            plan = capped_plan(defs, cap_values)
        query, columns = outcome_stats_sql(plan, DUCKDB, present)
        cursor = con.execute(query.sql, query.params)
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    stats, assigned = collect_stats(rows, columns)
    return MetricTable(stats=stats, assigned=assigned, events=0, quarantined=0, caps=cap_values)


def capped_plan(defs: Sequence[MetricDef], cap_values: Mapping[str, float]) -> Plan:
    """The plan of ``defs`` with each capped metric's numerator winsorised at its cap value."""
    return make_plan([with_cap(d, cap_values[d.name]) if d.name in cap_values else d for d in defs])


def _outcome_caps(
    con: duckdb.DuckDBPyConnection, plan: Plan, caps: Mapping[str, float], present: Sequence[str]
) -> dict[str, float]:
    return cap_values_of(con, outcome_cap_quantiles_sql(plan, caps, DUCKDB, present))
