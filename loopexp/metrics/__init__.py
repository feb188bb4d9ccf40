"""Metrics: definitions as data (once, with denominators), compiled to SQL for DuckDB or Spark.

The package is light to import (``loopexp.design.spec`` reads :mod:`loopexp.metrics.definitions`,
and ``import loopexp.cli`` must not load DuckDB): the names below load their module on first use.

- :mod:`~loopexp.metrics.definitions`: metrics and measures as data, the standard library.
- :mod:`~loopexp.metrics.compile`: definitions → SQL per dialect (sufficient statistics, caps).
- :mod:`~loopexp.metrics.engine`: DuckDB: events + assignment → :class:`MetricTable`.
- :mod:`~loopexp.metrics.sources`, :mod:`~loopexp.metrics.checks`,
  :mod:`~loopexp.metrics.validated`: DuckDB inputs, run checks, validated events.
- :mod:`~loopexp.metrics.outcomes`: outcome tables; :mod:`~loopexp.metrics.links`: per-link clicks.
- :mod:`~loopexp.metrics.spark`: the same on Spark; :mod:`~loopexp.metrics.api`: one entry point.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name → the module defining it.
_PUBLIC: dict[str, str] = {
    "ALL_SEGMENTS": "loopexp.metrics.engine",
    "LIBRARY": "loopexp.metrics.definitions",
    "METRICS": "loopexp.metrics.definitions",
    "OUTCOMES": "loopexp.metrics.definitions",
    "AttributionWindow": "loopexp.metrics.definitions",
    "CovariateSums": "loopexp.metrics.engine",
    "EventsError": "loopexp.core.errors",
    "GroupStats": "loopexp.metrics.engine",
    "Measure": "loopexp.metrics.definitions",
    "Metric": "loopexp.metrics.definitions",
    "MetricDef": "loopexp.metrics.definitions",
    "MetricTable": "loopexp.metrics.engine",
    "MetricsError": "loopexp.metrics.compile",
    "MetricsReport": "loopexp.metrics.api",
    "QuarantineError": "loopexp.metrics.checks",
    "compute": "loopexp.metrics.api",
    "compute_metrics": "loopexp.metrics.engine",
    "compute_outcome_metrics": "loopexp.metrics.outcomes",
    "get_metric": "loopexp.metrics.definitions",
    "link_clicks": "loopexp.metrics.links",
    "normalize_url": "loopexp.metrics.links",
    "resolve_metric": "loopexp.metrics.definitions",
}

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


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'loopexp.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
