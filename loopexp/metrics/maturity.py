"""Censoring of immature outcomes: which recipients' values of a metric are final at a time.

A look before a recipient's maturity window has closed (:func:`loopexp.metrics.definitions.
maturity_hours` after their send) would count a late clicker or buyer as a non-responder. The
engine leaves such recipients out of the metric's population instead (both dialects, the same
SQL), and reports when the campaign's last send was (:func:`last_sent_of`, from the same query),
from which the analysis dates its read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from loopexp.events.validation import Dialect
from loopexp.metrics.definitions import MetricDef, maturity_hours


def matured_columns(
    defs: Sequence[MetricDef], dialect: Dialect, bind: Callable[[Any], str], as_of: float
) -> tuple[list[str], dict[str, str]]:
    """Per distinct maturity window, whether a recipient's outcome is final at ``as_of``.

    ``as_of`` is seconds since the epoch; ``bind`` adds a query parameter and returns its marker.
    For the outcomes query of :func:`loopexp.metrics.compile.events_stats_sql`, which joins the
    assignment ``a`` with ``per_recipient`` ``p`` (whose ``first_sent`` is the recipient's first
    send or delivery event). A recipient is matured for metric ``d`` once ``maturity_hours(d)``
    have passed since that time; one without either event counts from the campaign's last send
    (they were on it), and when no send time is known at all nothing is censored. Returns the
    outcome columns and each metric's column.
    """
    ep = dialect.epoch
    last = f"(SELECT max({ep('first_sent')}) FROM per_recipient)"
    sent = f"coalesce({ep('p.first_sent')}, {last}, 0)"
    cols: list[str] = []
    by_hours: dict[float, str] = {}
    of: dict[str, str] = {}
    for d in defs:
        hours = maturity_hours(d)
        if hours not in by_hours:
            by_hours[hours] = f"matured_{len(by_hours)}"
            limit = f"{bind(float(as_of))} - {bind(hours * 3600.0)}"
            cols.append(f"{sent} <= {limit} AS {by_hours[hours]}")
        of[d.name] = by_hours[hours]
    return cols, of


def last_sent_of(rows: Sequence[dict[str, Any]]) -> Any:
    """The last send time over the rows of a compiled statistics query (None when none)."""
    times = [r["last_sent"] for r in rows if r.get("last_sent") is not None]
    return max(times, default=None)
