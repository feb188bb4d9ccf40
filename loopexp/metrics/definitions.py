"""Metric definitions: each metric is defined once, here, by its numerator and denominator.

The engine turns events into one outcome row per recipient (the columns of :data:`OUTCOMES`), then a
metric is ``numerator`` averaged over the recipients in its ``denominator`` population. Proportions
have a 0/1 numerator; means (revenue) a real-valued one. Denominators are stated on every metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES

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


# --- Definitions as data ---------------------------------------------------------------------
#
# The eleven metrics above are the engine's historical API. Below, every metric (those eleven, the
# rest of the standard library and the ones a spec defines) is a :class:`MetricDef`: plain data,
# validated by pydantic, that :mod:`loopexp.metrics.compile` turns into SQL for DuckDB or Spark.
# No string from a spec reaches SQL as text: identifiers are checked against the canonical schema
# (or the outcome table's columns) and quoted, values are bound as query parameters.

#: Denominator populations, every one stated:
#:
#: - ``assigned``: every recipient on the assignment (or outcome table row), holdout included;
#: - ``sent``: assigned to a mailed variant, i.e. everyone but the no-mail holdout;
#: - ``delivered``: sent and with a ``delivered`` event (outcome tables: a true ``delivered``);
#: - ``opened``: sent and with a human open (outcome tables: a true ``opened`` column).
PopulationName = Literal["assigned", "sent", "delivered", "opened"]
POPULATIONS: tuple[str, ...] = ("assigned", "sent", "delivered", "opened")

DefKind = Literal["proportion", "mean", "ratio"]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]

#: Canonical event columns a filter may test for equality (strings and flags; values are bound).
FILTER_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in EVENT_SCHEMA if f.name not in ("ts", "revenue", "event_type")
)

#: A safe SQL identifier (outcome-table columns and covariates); validated again at compile time.
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributionWindow(_Data):
    """Count only events within ``hours`` after the recipient's first ``after`` event.

    A recipient without that anchor event (never sent, never delivered) has nothing attributed.
    """

    hours: Annotated[float, Field(gt=0)]
    after: Literal["send", "delivered"] = "send"


class Measure(_Data):
    """A per-recipient value: an event filter and an aggregate, or a column of an outcome table.

    Event input: ``events`` (types), ``human_only`` (drop machine opens and bot clicks),
    ``where`` (equality on canonical columns, e.g. ``{campaign_id: spring}``), ``window`` and
    ``aggregate`` (``any``: 0/1 indicator, ``count``: number of events, ``sum_revenue``: revenue of
    the matching events). Outcome input: ``column``. Either: ``cap``, an upper bound applied to the
    per-recipient value (e.g. revenue capped at 500 to tame whales).
    """

    events: list[EventType] | None = None  # type: ignore[valid-type]
    column: Annotated[str, Field(pattern=IDENTIFIER)] | None = None
    aggregate: Literal["any", "count", "sum_revenue"] = "any"
    human_only: bool = True
    where: dict[str, str | bool] = Field(default_factory=dict)
    window: AttributionWindow | None = None
    cap: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Measure:
        if (self.events is None) == (self.column is None):
            raise ValueError("a measure takes either `events` (event types) or `column`, not both")
        if self.events is not None and not self.events:
            raise ValueError("`events` lists at least one event type")
        bad = sorted(set(self.where) - set(FILTER_COLUMNS))
        if bad:
            raise ValueError(f"`where` on unknown column(s) {bad}; allowed: {list(FILTER_COLUMNS)}")
        if self.column is not None and (self.where or self.window):
            raise ValueError("`where` and `window` apply to events, not to an outcome `column`")
        return self


class MetricDef(_Data):
    """A metric as data: numerator measure over a stated denominator population.

    ``proportion`` and ``mean`` average the numerator over the population's recipients; ``ratio``
    divides the population's numerator sum by its ``ratio_denominator`` sum (e.g. clicks / opens),
    compared with the delta method. ``covariates`` are pre-period columns of the assignment (event
    input) or the outcome table, whose cross sums come back for regression adjustment.
    """

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    kind: DefKind
    numerator: Measure
    denominator: PopulationName = "delivered"
    ratio_denominator: Measure | None = None
    direction: Literal["increase", "decrease"] = "increase"
    covariates: list[Annotated[str, Field(pattern=IDENTIFIER)]] = Field(default_factory=list)
    description: str = ""

    @model_validator(mode="after")
    def _ratio_has_denominator(self) -> MetricDef:
        if (self.kind == "ratio") != (self.ratio_denominator is not None):
            raise ValueError("`ratio_denominator` is required for kind ratio, and only for it")
        if (
            self.kind == "proportion"
            and self.numerator.aggregate != "any"
            and (self.numerator.events is not None)
        ):
            raise ValueError("a proportion counts recipients: its numerator aggregate is `any`")
        return self

    @property
    def higher_is_better(self) -> bool:
        """True when an increase is good (``direction: increase``)."""
        return self.direction == "increase"


#: The per-recipient outcomes of :data:`OUTCOMES`, as data (what the compiler uses).
STANDARD_MEASURES: dict[str, Measure] = {
    "delivered": Measure(events=["delivered"]),
    "bounced_hard": Measure(events=["bounce_hard"]),
    "bounced_soft": Measure(events=["bounce_soft"]),
    "opened_human": Measure(events=["open"]),
    "opened_any": Measure(events=["open"], human_only=False),
    "clicked_human": Measure(events=["click"]),
    "clicked_any": Measure(events=["click"], human_only=False),
    "ordered": Measure(events=["order"]),
    "revenue": Measure(events=["order"], aggregate="sum_revenue"),
    "unsubscribed": Measure(events=["unsubscribe"]),
    "complained": Measure(events=["complaint"]),
}


def _as_def(m: Metric) -> MetricDef:
    return MetricDef(
        name=m.name,
        kind=m.kind,
        numerator=STANDARD_MEASURES[m.numerator],
        denominator=m.denominator,
        direction="increase" if m.higher_is_better else "decrease",
        description=m.description,
    )


#: The standard library: today's eleven metrics plus ratio and revenue metrics.
LIBRARY: dict[str, MetricDef] = {m.name: _as_def(m) for m in _ALL} | {
    d.name: d
    for d in (
        MetricDef(
            name="click_to_open_rate",
            kind="ratio",
            numerator=STANDARD_MEASURES["clicked_human"],
            ratio_denominator=STANDARD_MEASURES["opened_human"],
            denominator="delivered",
            description="human clickers / human openers (ratio of means, delta method)",
        ),
        MetricDef(
            name="revenue_per_recipient",
            kind="mean",
            numerator=STANDARD_MEASURES["revenue"],
            denominator="sent",
            description="revenue / recipients sent (undelivered recipients count as 0)",
        ),
        MetricDef(
            name="revenue_per_click",
            kind="ratio",
            numerator=STANDARD_MEASURES["revenue"],
            ratio_denominator=Measure(events=["click"], aggregate="count"),
            denominator="delivered",
            description="revenue / human clicks (ratio of means, delta method)",
        ),
    )
}


def resolve_metric(name: str, custom: Sequence[MetricDef] = ()) -> MetricDef:
    """The definition of ``name``: a spec-defined metric first, else the standard library."""
    for d in custom:
        if d.name == name:
            return d
    try:
        return LIBRARY[name]
    except KeyError:
        known = sorted({*LIBRARY, *(d.name for d in custom)})
        raise KeyError(f"unknown metric {name!r}; known metrics: {known}") from None


# --- Maturity: when a recipient's value of a metric is final ---------------------------------
#
# An outcome keeps arriving after the send: a click read 2 hours after the send counts the fast
# clickers only, and a decision on it favours whatever makes people respond sooner, not more.
# A recipient's value of a metric is final once the longest of these windows (hours after the
# recipient was sent) has passed for every event type the metric counts. Opens and clicks: 72 h
# (most arrive within a day; the tail by the third); orders: 7 days (the usual attribution
# window); unsubscribes: 72 h (with the clicks that lead to them); complaints: 7 days (feedback
# loops report late); deliveries and bounces: 72 h (soft bounces are retried for up to 3 days).

#: Default maturity window (hours after the recipient's send) per event type.
MATURITY_HOURS: dict[str, float] = {
    "send": 0.0,
    "delivered": 72.0,
    "deferred": 72.0,
    "bounce_hard": 72.0,
    "bounce_soft": 72.0,
    "open": 72.0,
    "click": 72.0,
    "unsubscribe": 72.0,
    "complaint": 168.0,
    "order": 168.0,
}

#: Webhook deliveries are retried after the event (SendGrid: up to 24 h, Mailgun: 8 h; see
#: reference/webhooks.md): events received by webhook are final this much later again.
WEBHOOK_RETRY_LAG_HOURS = 24.0


def _measure_maturity(m: Measure) -> float:
    """Hours after the send after which one recipient's value of ``m`` no longer changes."""
    if m.events is None:  # an outcome table's column: final by the time it was exported
        return 0.0
    hours = max(MATURITY_HOURS[t] for t in m.events)
    if m.window is None:
        return hours
    if m.window.after == "send":  # nothing after the window counts
        return min(hours, m.window.hours)
    return m.window.hours + MATURITY_HOURS["delivered"]  # the delivery itself may come late


def maturity_hours(d: MetricDef) -> float:
    """Hours after a recipient's send after which their value of metric ``d`` is final.

    The longest default window (:data:`MATURITY_HOURS`) among the event types the metric counts,
    its denominator population (``delivered``: the delivery window) included; an attribution
    window ends it sooner (after the send) or sets it (after the delivery, plus that lag).
    """
    hours = [_measure_maturity(m) for m in (d.numerator, d.ratio_denominator) if m is not None]
    if d.denominator in ("delivered", "opened") and d.numerator.events is not None:
        hours.append(MATURITY_HOURS["open" if d.denominator == "opened" else "delivered"])
    return max(hours)
