"""Metric definitions: each metric is defined once, here, by its numerator and denominator.

The engine turns events into one outcome row per recipient (the columns of :data:`OUTCOMES`), then a
metric is ``numerator`` averaged over the recipients in its ``denominator`` population. Proportions
have a 0/1 numerator; means (revenue) a real-valued one. Denominators are stated on every metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["proportion", "mean"]

#: Per-recipient outcome columns the engine derives from canonical events (SQL aggregates over
#: one recipient's events). Machine opens and bot clicks are excluded from the "human" columns
#: and kept in the raw ones.
OUTCOMES: dict[str, str] = {
    "delivered": "bool_or(event_type = 'delivered')",
    "bounced_hard": "bool_or(event_type = 'bounce_hard')",
    "bounced_soft": "bool_or(event_type = 'bounce_soft')",
    "opened_human": "bool_or(event_type = 'open' AND is_machine_open IS NOT TRUE)",
    "opened_any": "bool_or(event_type = 'open')",
    "clicked_human": "bool_or(event_type = 'click' AND is_bot_click IS NOT TRUE)",
    "clicked_any": "bool_or(event_type = 'click')",
    "ordered": "bool_or(event_type = 'order')",
    "revenue": "coalesce(sum(revenue) FILTER (WHERE event_type = 'order'), 0)",
    "unsubscribed": "bool_or(event_type = 'unsubscribe')",
    "complained": "bool_or(event_type = 'complaint')",
}

#: The reserved group id of the no-mail holdout: it is on no send list, so in no denominator.
HOLDOUT = "holdout"

#: Denominator populations: "sent" is everyone on a variant's send list; "delivered" those with a
#: delivery event; "assigned" everyone assigned, the no-mail holdout included (intent to treat:
#: the only population in which a mailed arm can be compared with not mailing).
Population = Literal["sent", "delivered", "assigned"]


@dataclass(frozen=True)
class Metric:
    """A metric: ``numerator`` averaged over the recipients of population ``denominator``."""

    name: str
    kind: MetricKind
    numerator: str
    denominator: Population
    higher_is_better: bool
    description: str


_ALL = [
    Metric("delivery_rate", "proportion", "delivered", "sent", True, "delivered / sent"),
    Metric("hard_bounce_rate", "proportion", "bounced_hard", "sent", False, "hard bounces / sent"),
    Metric("soft_bounce_rate", "proportion", "bounced_soft", "sent", False, "soft bounces / sent"),
    Metric(
        "open_rate",
        "proportion",
        "opened_human",
        "delivered",
        True,
        "unique human opens / delivered (machine opens excluded)",
    ),
    Metric(
        "open_rate_raw",
        "proportion",
        "opened_any",
        "delivered",
        True,
        "unique opens / delivered, machine opens included (as most ESP dashboards show it)",
    ),
    Metric(
        "click_rate",
        "proportion",
        "clicked_human",
        "delivered",
        True,
        "unique human clicks / delivered (bot clicks excluded)",
    ),
    Metric(
        "click_rate_raw",
        "proportion",
        "clicked_any",
        "delivered",
        True,
        "unique clicks / delivered, bot clicks included",
    ),
    Metric("conversion_rate", "proportion", "ordered", "delivered", True, "buyers / delivered"),
    Metric("revenue_per_delivered", "mean", "revenue", "delivered", True, "revenue / delivered"),
    Metric(
        "unsubscribe_rate",
        "proportion",
        "unsubscribed",
        "delivered",
        False,
        "unsubscribes / delivered",
    ),
    Metric(
        "complaint_rate", "proportion", "complained", "delivered", False, "complaints / delivered"
    ),
    Metric(
        "conversion_per_assigned",
        "proportion",
        "ordered",
        "assigned",
        True,
        "buyers / everyone assigned, holdout included (intent to treat; for incrementality)",
    ),
    Metric(
        "revenue_per_assigned",
        "mean",
        "revenue",
        "assigned",
        True,
        "revenue / everyone assigned, holdout included (intent to treat; for incrementality)",
    ),
]

#: Every known metric by name.
METRICS: dict[str, Metric] = {m.name: m for m in _ALL}


def get_metric(name: str) -> Metric:
    """Look a metric up by name, with the list of known names when it is missing."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known metrics: {sorted(METRICS)}") from None
