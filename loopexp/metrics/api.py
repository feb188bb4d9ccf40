"""One entry point for every input and engine: what ``loopexp metrics`` and notebooks call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from loopexp.metrics.definitions import MetricDef
from loopexp.metrics.engine import MetricTable, compute_metrics
from loopexp.metrics.outcomes import compute_outcome_metrics
from loopexp.metrics.sources import Source

Engine = Literal["duckdb", "spark"]


@dataclass
class MetricsReport:
    """What :func:`compute` returns: the statistics and, for event input, the per-link clicks."""

    table: MetricTable
    links: pd.DataFrame | None
    input: str
    engine: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (statistics, counts, caps, links); no per-recipient rows."""
        t = self.table
        stats = []
        for s in t.stats:
            row = {k: getattr(s, k) for k in ("metric", "variant_id", "segment", "n", "sum")}
            row["sum_sq"] = s.sum_sq
            if s.den_sum is not None:
                row |= {"den_sum": s.den_sum, "den_sum_sq": s.den_sum_sq, "cross_sum": s.cross_sum}
            if s.covariates:
                row["covariates"] = {k: vars(v) for k, v in s.covariates.items()}
            row["value"] = None if s.value != s.value else s.value  # NaN → null
            stats.append(row)
        return {
            "input": self.input,
            "engine": self.engine,
            "assigned": t.assigned,
            "events": t.events,
            "quarantined": t.quarantined,
            "quarantine_reasons": t.quarantine_reasons,
            "unassigned_events": t.unassigned_events,
            "caps": t.caps,
            "stats": stats,
            "links": None if self.links is None else self.links.to_dict(orient="records"),
        }


def compute(
    metrics: Sequence[str | MetricDef],
    *,
    events: Source | None = None,
    assignment: Source | None = None,
    outcomes: Source | None = None,
    engine: Engine = "duckdb",
    links: bool = True,
    quarantine_path: str | Path | None = None,
    spark: Any = None,
    caps: Mapping[str, float] | None = None,
    **checks: Any,
) -> MetricsReport:
    """Compute ``metrics`` from events + assignment, or from an outcome table, on either engine.

    Args:
        metrics: standard metric names or definitions (``spec.metric_defs`` for a spec's own).
        events: canonical events (Parquet path, glob, or DataFrame); with ``assignment``.
        assignment: ``recipient_key, segment, variant_id`` (+ covariates).
        outcomes: an outcome table instead (one row per recipient).
        engine: ``duckdb`` (default, one machine) or ``spark`` (``$LOOPEXP_SPARK_MASTER``).
        links: also return the per-link click table (event input only).
        quarantine_path: Parquet file for quarantined events (DuckDB, event input).
        spark: a ``SparkSession`` to use (default: the active one or a new one).
        caps: mean metric → percentile at which its per-recipient numerator is capped (either
            input, both engines; see :func:`loopexp.metrics.compute_metrics`).
        **checks: event input: the run's checks and bounds of
            :func:`loopexp.metrics.compute_metrics` (``max_quarantine_share``, ``as_of`` and
            ``scope`` on both engines; ``memory_limit``, ``temp_directory``, ``segments``,
            ``variants``, ``require_match`` on DuckDB).

    Raises:
        ValueError: when the inputs are not exactly one of (events and assignment) or outcomes.
    """
    if (outcomes is None) == (events is None or assignment is None) or (
        outcomes is not None and (events is not None or assignment is not None)
    ):
        raise ValueError("give either events and assignment, or an outcome table, not both")
    if engine not in ("duckdb", "spark"):
        raise ValueError(f"unknown engine {engine!r}; use duckdb or spark")
    if engine == "spark":
        import loopexp.metrics.spark as sp  # noqa: PLC0415 (pyspark is optional and slow)

        session = spark or sp.spark_session()
        if outcomes is not None:
            return MetricsReport(
                sp.compute_outcome_metrics_spark(outcomes, metrics, session, caps=caps),
                None,
                "outcomes",
                engine,
            )
        table = sp.compute_metrics_spark(
            events,
            assignment,
            metrics,
            session,
            caps=caps,
            max_quarantine_share=checks.get("max_quarantine_share"),
            as_of=checks.get("as_of"),
            scope=checks.get("scope"),
        )
        link_table = (
            sp.link_clicks_spark(events, assignment, session, checks.get("scope"))
            if links
            else None
        )
        return MetricsReport(table, link_table, "events", engine)

    if outcomes is not None:
        table = compute_outcome_metrics(outcomes, metrics, caps=caps)
        return MetricsReport(table, None, "outcomes", engine)
    table = compute_metrics(
        events, assignment, metrics, quarantine_path, caps=caps, links=links, **checks
    )
    return MetricsReport(table, table.links, "events", engine)
