"""The same metric definitions on Apache Spark, for lists that outgrow one machine.

The SQL is the one :mod:`loopexp.metrics.compile` generates for DuckDB, in Spark's dialect; only the
sufficient statistics (a few hundred numbers) and the per-link table come back to the driver.

Pointing it at a cluster is configuration, not code: the sources are Parquet paths every executor
can read (``s3a://bucket/events/*.parquet``, ``abfss://...``, ``hdfs://...``) and the session comes
from ``spark.master`` (``$LOOPEXP_SPARK_MASTER``, e.g. ``spark://host:7077``, ``yarn``,
``k8s://https://...``; default ``local[*]``), or pass your own ``SparkSession``
(``SparkSession.builder.getOrCreate()`` in a Databricks or EMR notebook). pyspark comes with the
``spark`` extra (``pip install 'loopexp[spark]'``) and needs Java 17.

Events are validated by the same rules as in DuckDB (:mod:`loopexp.events.validation`, compiled for
Spark SQL): the same quarantine reasons and counts, the first of each duplicated
``(provider, event_id)`` by time kept; ``tests/test_validation_parity.py`` holds both engines to it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from loopexp.core import config
from loopexp.core.errors import EventsError
from loopexp.events.schema import EVENT_SCHEMA, REQUIRED_COLUMNS
from loopexp.events.scope import SendScope
from loopexp.events.validation import DUPLICATE, SPARK, checked_events_sql, dedupe_rank
from loopexp.metrics.compile import (
    cap_quantiles_sql,
    events_stats_sql,
    make_plan,
    with_cap,
)
from loopexp.metrics.definitions import MetricDef
from loopexp.metrics.engine import (
    MetricTable,
    check_quarantine_share,
    collect_stats,
    epoch_of,
    unassigned_events,
    utc,
)
from loopexp.metrics.links import LINK_COLUMNS, links_sql, order_links
from loopexp.metrics.maturity import last_sent_of
from loopexp.metrics.outcome_sql import outcome_cap_quantiles_sql, outcome_stats_sql
from loopexp.metrics.outcomes import capped_plan, check_outcome_columns, resolve
from loopexp.metrics.periods import ENROLLED_AT, by_period, periods_sql, split_batches
from loopexp.metrics.sources import Source, require_source

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_session(master: str | None = None) -> SparkSession:
    """A Spark session: ``master`` or ``$LOOPEXP_SPARK_MASTER`` or ``local[*]``, UTC timestamps.

    An active session (a notebook's, a cluster job's) is reused as is.
    """
    from pyspark.sql import SparkSession  # noqa: PLC0415 (optional dependency, slow import)

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    return (
        SparkSession.builder.master(master or config.spark_master())
        .appName("loopexp-metrics")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", config.spark_partitions())
        .getOrCreate()
    )


def _read(spark: SparkSession, source: Source, what: str, scratch: Path) -> DataFrame:
    """A Spark DataFrame of a Parquet/CSV path, or of a pandas frame (via Parquet, as on a lake)."""
    require_source(source, what)
    if isinstance(source, pd.DataFrame):
        path = scratch / f"{what.replace(' ', '_')}.parquet"
        # Spark reads microsecond timestamps only (the canonical schema's resolution).
        source.to_parquet(
            path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True
        )
        return spark.read.parquet(str(path))
    path = str(source)
    if path.endswith((".csv", ".csv.gz")):
        # every column as text, as DuckDB reads CSV: the validation parses types itself
        return spark.read.csv(path, header=True, inferSchema=False)
    return spark.read.parquet(path)


def _require(df: DataFrame, columns: Sequence[str], source: Source, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        where = "DataFrame" if isinstance(source, pd.DataFrame) else str(source)
        raise EventsError(
            f"{where}: missing required column(s) {missing} of the {what}; has {df.columns}."
        )


def _rows(spark: SparkSession, sql: str, params: dict) -> list[dict]:
    return [r.asDict() for r in spark.sql(sql, args=params).collect()]


def _validate_events(
    spark: SparkSession, raw: DataFrame, source: Source, scope: SendScope | None = None
) -> None:
    """Temp views ``checked_events``, ``ranked_events`` and ``valid_events``.

    The canonical validation (:mod:`loopexp.events.validation`) in Spark SQL: the same parsing
    and quarantine rules as DuckDB, and the same dedupe rule as one window over the valid events.
    """
    _require(raw, REQUIRED_COLUMNS, source, "events")
    raw.createOrReplaceTempView("raw_events")
    scope = scope or SendScope()
    checked = checked_events_sql(
        SPARK, dict(raw.dtypes), "raw_events", scope.rules(), scope.fields(SPARK)
    )
    spark.sql(f"CREATE OR REPLACE TEMP VIEW checked_events AS {checked}")
    spark.sql(f"""CREATE OR REPLACE TEMP VIEW ranked_events AS
        SELECT *, {dedupe_rank()} AS dup_rank
        FROM checked_events WHERE quarantine_reason IS NULL""")
    columns = ", ".join(EVENT_SCHEMA.names)
    spark.sql(
        f"CREATE OR REPLACE TEMP VIEW valid_events AS "
        f"SELECT {columns} FROM ranked_events WHERE dup_rank = 1"
    )


def compute_metrics_spark(
    events: Source,
    assignment: Source,
    metrics: Sequence[str | MetricDef],
    spark: SparkSession | None = None,
    caps: Mapping[str, float] | None = None,
    max_quarantine_share: float | None = None,
    as_of: datetime | None = None,
    scope: SendScope | None = None,
) -> MetricTable:
    """:func:`loopexp.metrics.compute_metrics` on Spark: same definitions, same statistics.

    ``caps`` (mean metric → percentile) are computed here, in Spark, by the same compiled query
    as in DuckDB (Spark's exact ``percentile`` interpolates as DuckDB's ``quantile_cont``).
    ``max_quarantine_share``: above it the run stops with :class:`QuarantineError`, as on DuckDB.
    ``as_of`` censors immature outcomes by the same compiled query as in DuckDB; ``scope``
    quarantines the events that are not this send's by the same rules.
    """
    defs = resolve(metrics)
    plan = make_plan(defs)
    spark = spark or spark_session()
    with tempfile.TemporaryDirectory(prefix="loopexp-spark-") as scratch:
        raw = _read(spark, events, "events", Path(scratch))
        assigned_df = _read(spark, assignment, "assignment", Path(scratch))
        _require(
            assigned_df,
            ("recipient_key", "segment", "variant_id", *plan.covariates),
            assignment,
            "assignment",
        )
        assigned_df.createOrReplaceTempView("assignment_src")
        _validate_events(spark, raw, events, scope)
        counts = {
            r["quarantine_reason"]: r["n"]
            for r in _rows(
                spark,
                "SELECT quarantine_reason, count(*) AS n FROM checked_events GROUP BY 1",
                {},
            )
        }
        (dup,) = _rows(spark, "SELECT count(*) AS n FROM ranked_events WHERE dup_rank > 1", {})
        cap_values: dict[str, float] = {}
        compiled = cap_quantiles_sql(plan, caps or {}, SPARK)
        if compiled is not None:
            cap_query, aliases = compiled
            (row,) = _rows(spark, cap_query.sql, cap_query.params)
            cap_values = {m: float(row[a]) for m, a in aliases.items() if row[a] is not None}
            plan = make_plan(
                [with_cap(d, cap_values[d.name]) if d.name in cap_values else d for d in defs]
            )
        query, columns = events_stats_sql(plan, SPARK, as_of=epoch_of(as_of))
        rows, batches = split_batches(_rows(spark, query.sql, query.params))
        periods = []
        if ENROLLED_AT in assigned_df.columns:  # the assignment alone: no scan of the events
            periods = _rows(spark, periods_sql("assignment_src"), {})
    stats, assigned = collect_stats(rows, columns)
    reasons = {k: int(v) for k, v in counts.items() if k is not None}
    if dup["n"]:
        reasons[DUPLICATE] = int(dup["n"])
    reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    check_quarantine_share(events, int(sum(counts.values())), reasons, max_quarantine_share)
    return MetricTable(
        stats=stats,
        assigned=assigned,
        events=int(sum(counts.values())),
        quarantined=sum(reasons.values()),
        quarantine_reasons=reasons,
        unassigned_events=unassigned_events(rows),
        caps=cap_values,
        last_sent_at=utc(last_sent_of(rows)),
        censored_at=as_of,
        assigned_by_period=by_period((r["period"], r["variant_id"], r["n"]) for r in periods),
        sent_by_batch=batches,
    )


def compute_outcome_metrics_spark(
    outcomes: Source,
    metrics: Sequence[str | MetricDef],
    spark: SparkSession | None = None,
    caps: Mapping[str, float] | None = None,
) -> MetricTable:
    """:func:`loopexp.metrics.compute_outcome_metrics` on Spark (percentile ``caps`` too)."""
    defs = resolve(metrics)
    plan = make_plan(defs)
    spark = spark or spark_session()
    with tempfile.TemporaryDirectory(prefix="loopexp-spark-") as scratch:
        table = _read(spark, outcomes, "outcome table", Path(scratch))
        check_outcome_columns(table.columns, defs, outcomes)
        table.createOrReplaceTempView("outcomes_src")
        cap_values: dict[str, float] = {}
        compiled = outcome_cap_quantiles_sql(plan, caps or {}, SPARK, table.columns)
        if compiled is not None:
            cap_query, aliases = compiled
            (row,) = _rows(spark, cap_query.sql, cap_query.params)
            cap_values = {m: float(row[a]) for m, a in aliases.items() if row[a] is not None}
            plan = capped_plan(defs, cap_values)
        query, columns = outcome_stats_sql(plan, SPARK, table.columns)
        rows = _rows(spark, query.sql, query.params)
    stats, assigned = collect_stats(rows, columns)
    return MetricTable(stats=stats, assigned=assigned, events=0, quarantined=0, caps=cap_values)


def link_clicks_spark(
    events: Source,
    assignment: Source,
    spark: SparkSession | None = None,
    scope: SendScope | None = None,
) -> pd.DataFrame:
    """:func:`loopexp.metrics.links.link_clicks` on Spark (of the send's ``scope`` only)."""
    spark = spark or spark_session()
    with tempfile.TemporaryDirectory(prefix="loopexp-spark-") as scratch:
        raw = _read(spark, events, "events", Path(scratch))
        assigned_df = _read(spark, assignment, "assignment", Path(scratch))
        _require(assigned_df, ("recipient_key", "variant_id"), assignment, "assignment")
        assigned_df.createOrReplaceTempView("assignment_src")
        _validate_events(spark, raw, events, scope)
        query = links_sql(SPARK)
        frame = pd.DataFrame(_rows(spark, query.sql, query.params))
    if frame.empty:
        return pd.DataFrame(columns=LINK_COLUMNS)
    return order_links(frame)
