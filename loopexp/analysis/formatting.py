"""Numbers in words for people: one way to print a lift, a p-value, a rate or an interval.

Plain data → text, below the results: :class:`~loopexp.analysis.results.ExperimentResults` renders
itself with these (terminal table, Jupyter HTML) without importing the report stage, and the report
stage builds its other views on the same helpers.
"""

from __future__ import annotations

import math


def fmt_pct(x: float | None) -> str:
    """A relative change as a signed percentage ("+3.1%"); "–" when undefined."""
    return "–" if x is None or math.isnan(x) else f"{x:+.1%}"


def fmt_p(p: float) -> str:
    """A p-value with two significant digits ("<0.001" below that)."""
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def fmt_points(x: float | None) -> str:
    """An interval end in percent without the sign (``+3.1``); infinite ends as ∞."""
    if x is None or math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{100 * x:+.1f}"


def fmt_level(level: float | None) -> str:
    """The interval's level when it is not 95 % (adjusted intervals are wider than 95 %)."""
    if level is None or abs(level - 0.95) < 1e-9:
        return ""
    return f" {100 * level:.3g}%"


def fmt_value(metric: str, value: float | None) -> str:
    """A metric's value: a rate as a percentage, anything else as a plain number."""
    if value is None:
        return "–"
    from loopexp.metrics.definitions import resolve_metric  # noqa: PLC0415 (loads pyarrow)

    try:
        proportion = resolve_metric(metric).kind == "proportion"
    except KeyError:  # a spec-defined metric: shown as a plain number
        proportion = False
    return f"{value:.2%}" if proportion else f"{value:.3f}"


def fmt_interval(low: float | None, high: float | None) -> str:
    """An interval of relative changes, "+1.0% to +5.2%" ("–" when either end is missing)."""
    return "–" if low is None or high is None else f"{low:+.1%} to {high:+.1%}"


def metric_label(metric: str) -> str:
    """A metric's name in words: ``click_rate`` → "click rate"."""
    return metric.replace("_", " ")
