"""The same metric definitions on Apache Spark, for lists that outgrow one machine.

The SQL is the one :mod:`loopexp.metrics.compile` generates for DuckDB, in Spark's dialect; only the
sufficient statistics (a few hundred numbers) and the per-link table come back to the driver.

Pointing it at a cluster is configuration, not code: the sources are Parquet paths every executor
can read (``s3a://bucket/events/*.parquet``, ``abfss://...``, ``hdfs://...``) and the session comes
from ``spark.master`` (``$LOOPEXP_SPARK_MASTER``, e.g. ``spark://host:7077``, ``yarn``,
``k8s://https://...``; default ``local[*]``), or pass your own ``SparkSession``
(``SparkSession.builder.getOrCreate()`` in a Databricks or EMR notebook). pyspark comes with the
``spark`` extra (``pip install 'loopexp[spark]'``) and needs Java 17.

Event validation here is a Spark port of the DuckDB engine's (same reasons, first of each duplicated
``(provider, event_id)`` by time kept); tests hold both engines to the same statistics.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from loopexp.core import config
from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS
from loopexp.metrics.compile import (
    SPARK,
    cap_quantiles_sql,
    events_stats_sql,
    links_sql,
    make_plan,
    outcome_cap_quantiles_sql,
    outcome_stats_sql,
    with_cap,
)
from loopexp.metrics.definitions import MetricDef
from loopexp.metrics.engine import (
    DUPLICATE,
    EventsError,
    MetricTable,
    Source,
    collect_stats,
    require_source,
    unassigned_events,
)
from loopexp.metrics.links import order_links
from loopexp.metrics.outcomes import capped_plan, check_outcome_columns, resolve

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_SPARK_TYPES = {
    "string": "STRING",
    "timestamp[us, tz=UTC]": "TIMESTAMP",
    "bool": "BOOLEAN",
    "double": "DOUBLE",
}


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
        return spark.read.csv(path, header=True, inferSchema=True)
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


def _validate_events(spark: SparkSession, raw: DataFrame, source: Source) -> None:
    """Temp views ``checked_events``, ``ranked_events`` and ``valid_events`` (Spark port)."""
    _require(raw, REQUIRED_COLUMNS, source, "events")
    raw.createOrReplaceTempView("raw_events")
    present = set(raw.columns)
    select = ", ".join(
        f"try_cast({f.name} AS {_SPARK_TYPES[str(f.type)]}) AS {f.name}"
        if f.name in present
        else f"CAST(NULL AS {_SPARK_TYPES[str(f.type)]}) AS {f.name}"
        for f in EVENT_SCHEMA
    )
    known = ", ".join(f"'{t}'" for t in EVENT_TYPES)  # our constants, not input
    spark.sql(f"""CREATE OR REPLACE TEMP VIEW checked_events AS
        SELECT *,
            CASE
                WHEN event_id IS NULL OR event_id = '' THEN 'missing event_id'
                WHEN recipient_key IS NULL OR recipient_key = '' THEN 'missing recipient_key'
                WHEN ts IS NULL THEN 'missing or unparseable ts'
                WHEN event_type IS NULL OR event_type NOT IN ({known}) THEN 'unknown event_type'
                WHEN event_type = 'order' AND (revenue IS NULL OR revenue < 0)
                    THEN 'order without a valid revenue'
            END AS quarantine_reason
        FROM (SELECT {select} FROM raw_events)""")
    spark.sql("""CREATE OR REPLACE TEMP VIEW ranked_events AS
        SELECT *, row_number() OVER (
            PARTITION BY coalesce(provider, ''), event_id ORDER BY ts, recipient_key
        ) AS dup_rank
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
) -> MetricTable:
    """:func:`loopexp.metrics.compute_metrics` on Spark: same definitions, same statistics.

    ``caps`` (mean metric → percentile) are computed here, in Spark, by the same compiled query
    as in DuckDB (Spark's exact ``percentile`` interpolates as DuckDB's ``quantile_cont``).
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
        _validate_events(spark, raw, events)
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
        query, columns = events_stats_sql(plan, SPARK)
        rows = _rows(spark, query.sql, query.params)
    stats, assigned = collect_stats(rows, columns)
    reasons = {k: int(v) for k, v in counts.items() if k is not None}
    if dup["n"]:
        reasons[DUPLICATE] = int(dup["n"])
    reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    return MetricTable(
        stats=stats,
        assigned=assigned,
        events=int(sum(counts.values())),
        quarantined=sum(reasons.values()),
        quarantine_reasons=reasons,
        unassigned_events=unassigned_events(rows),
        caps=cap_values,
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
    events: Source, assignment: Source, spark: SparkSession | None = None
) -> pd.DataFrame:
    """:func:`loopexp.metrics.links.link_clicks` on Spark."""
    spark = spark or spark_session()
    with tempfile.TemporaryDirectory(prefix="loopexp-spark-") as scratch:
        raw = _read(spark, events, "events", Path(scratch))
        assigned_df = _read(spark, assignment, "assignment", Path(scratch))
        _require(assigned_df, ("recipient_key", "variant_id"), assignment, "assignment")
        assigned_df.createOrReplaceTempView("assignment_src")
        _validate_events(spark, raw, events)
        query = links_sql(SPARK)
        frame = pd.DataFrame(_rows(spark, query.sql, query.params))
    if frame.empty:
        return pd.DataFrame(columns=["variant_id", "link", "clicks", "clickers", "share"])
    return order_links(frame)
