"""Metrics: definitions as data (once, with denominators), compiled to SQL for DuckDB or Spark."""

from loopexp.metrics.api import MetricsReport, compute
from loopexp.metrics.compile import MetricsError, normalize_url
from loopexp.metrics.definitions import (
    LIBRARY,
    METRICS,
    OUTCOMES,
    AttributionWindow,
    Measure,
    Metric,
    MetricDef,
    get_metric,
    resolve_metric,
)
from loopexp.metrics.engine import (
    ALL_SEGMENTS,
    CovariateSums,
    EventsError,
    GroupStats,
    MetricTable,
    QuarantineError,
    compute_metrics,
)
from loopexp.metrics.links import link_clicks
from loopexp.metrics.outcomes import compute_outcome_metrics

__all__ = [
    "ALL_SEGMENTS",
    "LIBRARY",
    "METRICS",
    "OUTCOMES",
    "AttributionWindow",
    "CovariateSums",
    "EventsError",
    "GroupStats",
    "Measure",
    "Metric",
    "MetricDef",
    "MetricTable",
    "MetricsError",
    "MetricsReport",
    "QuarantineError",
    "compute",
    "compute_metrics",
    "compute_outcome_metrics",
    "get_metric",
    "link_clicks",
    "normalize_url",
    "resolve_metric",
]
