"""Metrics: definitions (once, with denominators) and the engine that computes them."""

from loopexp.metrics.definitions import METRICS, OUTCOMES, Metric, get_metric
from loopexp.metrics.engine import (
    ALL_SEGMENTS,
    EventsError,
    GroupStats,
    MetricTable,
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
    "compute_metrics",
    "get_metric",
]
