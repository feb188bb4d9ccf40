"""Metrics: definitions (once, with denominators) and the engine that computes them."""

from loopexp.metrics.definitions import METRICS, OUTCOMES, Metric, get_metric
from loopexp.metrics.engine import (
    ALL_SEGMENTS,
    EventsError,
    GroupStats,
    MetricTable,
    QuarantineError,
    compute_metrics,
)

__all__ = [
    "ALL_SEGMENTS",
    "METRICS",
    "OUTCOMES",
    "EventsError",
    "GroupStats",
    "Metric",
    "MetricTable",
    "QuarantineError",
    "compute_metrics",
    "get_metric",
]
