"""Compile metric definitions (:class:`~loopexp.metrics.definitions.MetricDef`) to SQL.

One compiler, two dialects: DuckDB (the default engine) and Spark SQL (clusters). We generate SQL
rather than go through an expression layer such as ibis because the engine already is SQL (the
validation views, quarantine and dedupe are SQL), the query shapes are few and portable (CASE
aggregates, GROUPING SETS, window functions), and ibis would add a large dependency whose Spark
and DuckDB backends move at their own pace; the two dialects differ here only in quoting,
parameter markers, epoch seconds and ``regexp_replace``'s "replace all" flag.

Nothing from a spec reaches the SQL text: event types and filter columns are checked against the
canonical schema, outcome columns and covariates against :data:`IDENTIFIER` and the table's real
columns and then quoted, and every value (event types, filter values, window hours, caps, the
holdout id) is bound as a named parameter. Generated aliases (``m0``, ``s12``) are ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from loopexp.core.errors import InputError
from loopexp.events.validation import Dialect
from loopexp.metrics.definitions import (
    FILTER_COLUMNS,
    HOLDOUT,
    IDENTIFIER,
    STANDARD_MEASURES,
    Measure,
    MetricDef,
)
from loopexp.metrics.maturity import matured_columns
from loopexp.metrics.periods import SEND_BATCH, send_batch_column


class MetricsError(InputError):
    """A metric that cannot be computed from the given input (with what to do about it)."""


def quote(dialect: Dialect, identifier: str) -> str:
    """Quote a spec-named identifier (raise :class:`MetricsError` for anything not a plain name)."""
    if not re.fullmatch(IDENTIFIER, identifier):
        raise MetricsError(f"{identifier!r} is not a valid column name (letters, digits, _)")
    return f"{dialect.quote_char}{identifier}{dialect.quote_char}"


@dataclass
class Params:
    """Values bound to the query, collected while compiling."""

    dialect: Dialect
    values: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> str:
        """Add ``value`` and return its marker."""
        key = f"p{len(self.values)}"
        self.values[key] = value
        return self.dialect.marker(key)


@dataclass(frozen=True)
class Compiled:
    """One SQL statement and its parameters."""

    sql: str
    params: dict[str, Any]


# --- measures on events ------------------------------------------------------------------------


def _event_condition(m: Measure, p: Params, anchor: str | None) -> str:
    assert m.events is not None
    types = ", ".join(p.bind(t) for t in m.events)
    parts = [f"event_type IN ({types})"]
    if m.human_only and "open" in m.events:
        parts.append("(event_type <> 'open' OR is_machine_open IS NOT TRUE)")
    if m.human_only and "click" in m.events:
        parts.append("(event_type <> 'click' OR is_bot_click IS NOT TRUE)")
    for column, value in sorted(m.where.items()):
        if column not in FILTER_COLUMNS:  # also checked by the model; never trust one layer
            raise MetricsError(f"cannot filter on column {column!r}")
        parts.append(f"{quote(p.dialect, column)} = {p.bind(value)}")
    if m.window is not None:
        assert anchor is not None
        seconds = p.bind(float(m.window.hours) * 3600.0)
        ep = p.dialect.epoch
        parts.append(
            f"{anchor} IS NOT NULL AND {ep('ts')} >= {ep(anchor)} "
            f"AND {ep('ts')} <= {ep(anchor)} + {seconds}"
        )
    return " AND ".join(parts)


def _event_aggregate(m: Measure, p: Params) -> str:
    anchor = None if m.window is None else f"anchor_{m.window.after}"
    cond = _event_condition(m, p, anchor)
    if m.aggregate == "any":
        expr = f"max(CASE WHEN {cond} THEN 1 ELSE 0 END)"
    elif m.aggregate == "count":
        expr = f"sum(CASE WHEN {cond} THEN 1 ELSE 0 END)"
    else:
        expr = f"sum(CASE WHEN {cond} THEN coalesce(revenue, 0) ELSE 0 END)"
    return f"CAST({expr} AS DOUBLE)"


def _capped(expr: str, m: Measure, p: Params) -> str:
    return expr if m.cap is None else f"least({expr}, {p.bind(float(m.cap))})"


@dataclass(frozen=True)
class Plan:
    """The measures a set of metrics needs, each computed once, with generated aliases."""

    defs: tuple[MetricDef, ...]
    measures: tuple[Measure, ...]
    covariates: tuple[str, ...]

    def alias(self, m: Measure) -> str:
        """The per-recipient column of measure ``m``."""
        return f"m{self.measures.index(m)}"


#: Population indicators every plan carries (event input).
_DELIVERED = STANDARD_MEASURES["delivered"]
_OPENED = STANDARD_MEASURES["opened_human"]


def make_plan(defs: Sequence[MetricDef]) -> Plan:
    """Collect the distinct measures and covariates of ``defs`` (shared measures computed once)."""
    measures: list[Measure] = [_DELIVERED, _OPENED]
    covariates: list[str] = []
    for d in defs:
        for m in (d.numerator, d.ratio_denominator):
            if m is not None and m not in measures:
                measures.append(m)
        covariates += [c for c in d.covariates if c not in covariates]
    return Plan(tuple(defs), tuple(measures), tuple(covariates))


#: Indicator measures packed into one BIGINT aggregate state (bit_or) per this many measures.
_FLAG_BITS = 62


@dataclass(frozen=True)
class _Packed:
    """The per-recipient aggregate with its 0/1 measures packed into bits, and how to unpack.

    ``sql`` groups the events by ``recipient_key``: ``n_events``, the ``bit_or`` words ``f0``,
    ``f1``, ... (one bit per ``any`` measure), ``g<alias>`` for the other measures, and
    ``first_sent`` when asked. One 8-byte state per 62 indicators instead of one per indicator:
    the per-recipient aggregate is the engine's memory peak (DuckDB keeps the partial states of
    every event until it combines the partitions), and with all standard metrics nine of its
    twelve states were indicators. The statistics query joins these packed rows with the
    assignment and unpacks after the join, so the join's build side stays narrow too.
    """

    sql: str
    bits: dict[str, tuple[str, int]]  # measure alias -> (word column, bit value)
    caps: dict[str, str]  # measure alias -> bound cap marker

    def value(self, alias: str, ref: Callable[[str], str]) -> str:
        """Measure ``alias``'s per-recipient value; ``ref`` makes a packed column's reference."""
        if alias in self.bits:
            word, bit = self.bits[alias]
            # a bit test by & and <>, in both dialects (Spark has no >> before 4.0)
            expr = f"CAST(CASE WHEN ({ref(word)} & {bit}) <> 0 THEN 1 ELSE 0 END AS DOUBLE)"
        else:
            expr = ref(f"g{alias}")
        return expr if alias not in self.caps else f"least({expr}, {self.caps[alias]})"


def _packed(plan: Plan, p: Params, source: str, sent_at: bool = False) -> _Packed:
    windows = sorted({m.window.after for m in plan.measures if m.window is not None})
    flags = [m for m in plan.measures if m.events is not None and m.aggregate == "any"]
    words: list[str] = []
    bits: dict[str, tuple[str, int]] = {}
    for w in range(0, len(flags), _FLAG_BITS):
        cases = []
        for i, m in enumerate(flags[w : w + _FLAG_BITS]):
            cond = _event_condition(m, p, f"anchor_{m.window.after}" if m.window else None)
            cases.append(f"CASE WHEN {cond} THEN {1 << i} ELSE 0 END")
            bits[plan.alias(m)] = (f"f{len(words)}", 1 << i)
        words.append(f"bit_or(CAST({' | '.join(cases)} AS BIGINT)) AS f{len(words)}")
    states = [
        f"{_event_aggregate(m, p)} AS g{plan.alias(m)}"
        for m in plan.measures
        if plan.alias(m) not in bits
    ]
    if sent_at:  # when the recipient was sent (censoring of immature outcomes)
        states.append(
            "min(CASE WHEN event_type IN ('send', 'delivered') THEN ts END) AS first_sent"
        )
    source_sql = source
    if windows:
        # Attribution windows need each recipient's anchor (first send / delivery) before the
        # events are filtered: a window function over the recipient's events, then the aggregate.
        anchors = ", ".join(
            f"min(CASE WHEN event_type = '{w}' THEN ts END) "
            f"OVER (PARTITION BY recipient_key) AS anchor_{w}"
            for w in windows
        )
        source_sql = f"(SELECT *, {anchors} FROM {source}) e"
    aggregates = ",\n    ".join(["count(*) AS n_events", *words, *states])
    caps = {plan.alias(m): p.bind(float(m.cap)) for m in plan.measures if m.cap is not None}
    sql = f"SELECT recipient_key, {aggregates}\nFROM {source_sql} GROUP BY recipient_key"
    return _Packed(sql, bits, caps)


def _per_recipient(plan: Plan, p: Params, source: str) -> str:
    """One row per recipient: ``n_events`` and every measure of the plan by its alias."""
    packed = _packed(plan, p, source)
    cols = ",\n    ".join(
        f"{packed.value(plan.alias(m), str)} AS {plan.alias(m)}" for m in plan.measures
    )
    return f"SELECT recipient_key, n_events,\n    {cols}\nFROM ({packed.sql}) g"


def per_recipient_sql(plan: Plan, dialect: Dialect, source: str = "valid_events") -> Compiled:
    """One pass over valid events to one row per recipient with every measure of the plan."""
    p = Params(dialect)
    return Compiled(_per_recipient(plan, p, source), p.values)


# --- sufficient statistics ---------------------------------------------------------------------


@dataclass(frozen=True)
class StatColumn:
    """Where one sufficient statistic of one metric lands in the result row."""

    metric: str
    stat: str  # n, sum, sum_sq, den_sum, den_sum_sq, cross_sum, cov:<x>:<stat>, cov:<x>:with:<z>
    alias: str


def _population(d: MetricDef, matured: Mapping[str, str] | None = None) -> str:
    pop = {
        "assigned": "is_assigned",
        "sent": "is_sent",
        "delivered": "is_sent AND is_delivered",
        "opened": "is_sent AND is_opened",
    }[d.denominator]
    return pop if not matured else f"{pop} AND {matured[d.name]}"


def _stat_columns(
    plan: Plan, value_of: dict[int, str], matured: Mapping[str, str] | None = None
) -> tuple[list[str], list[StatColumn]]:
    """Aggregates of every metric: n, sums, squares and cross sums, filtered to its population.

    With ``matured`` (metric → outcome column), only recipients whose outcome is final count.
    """
    exprs: list[str] = []
    columns: list[StatColumn] = []

    def add(metric: str, stat: str, expr: str) -> None:
        alias = f"s{len(columns)}"
        columns.append(StatColumn(metric, stat, alias))
        exprs.append(f"{expr} AS {alias}")

    for d in plan.defs:
        pop = _population(d, matured)
        y = value_of[id(d.numerator)]

        def total(expr: str, pop: str = pop) -> str:
            return f"sum(CASE WHEN {pop} THEN {expr} ELSE 0 END)"

        add(d.name, "n", f"sum(CASE WHEN {pop} THEN 1 ELSE 0 END)")
        add(d.name, "sum", total(y))
        add(d.name, "sum_sq", total(f"{y} * {y}"))
        den = None
        if d.ratio_denominator is not None:
            den = value_of[id(d.ratio_denominator)]
            add(d.name, "den_sum", total(den))
            add(d.name, "den_sum_sq", total(f"{den} * {den}"))
            add(d.name, "cross_sum", total(f"{y} * {den}"))
        for c in d.covariates:
            x = f"cov_{plan.covariates.index(c)}"
            missing = f"sum(CASE WHEN {pop} AND {x} IS NULL THEN 1 ELSE 0 END)"
            add(d.name, f"cov:{c}:missing", missing)
            add(d.name, f"cov:{c}:sum", total(f"coalesce({x}, 0)"))
            add(d.name, f"cov:{c}:sum_sq", total(f"coalesce({x}, 0) * coalesce({x}, 0)"))
            add(d.name, f"cov:{c}:cross", total(f"coalesce({x}, 0) * {y}"))
            if den is not None:
                add(d.name, f"cov:{c}:cross_den", total(f"coalesce({x}, 0) * {den}"))
            # Σ x·x' with each later covariate: with sum_sq, the whole Σxxᵀ of multi-covariate
            # regression adjustment (loopexp.stats.adjustment.Moments).
            for other in d.covariates[d.covariates.index(c) + 1 :]:
                xo = f"cov_{plan.covariates.index(other)}"
                add(
                    d.name,
                    f"cov:{c}:with:{other}",
                    total(f"coalesce({x}, 0) * coalesce({xo}, 0)"),
                )
    return exprs, columns


def _grouped(
    outcomes_sql: str,
    exprs: list[str],
    segmented: bool,
    per_recipient: str | None = None,
    batches: bool = False,
) -> str:
    if segmented:
        batch = f", {SEND_BATCH}" if batches else ""  # segments x batches: metrics/periods.py
        group = f"GROUP BY GROUPING SETS ((variant_id), (variant_id, segment{batch}))"
        seg = f"segment, GROUPING(segment) AS all_segments{batch}"
    else:
        group = "GROUP BY variant_id"
        seg = "CAST(NULL AS STRING) AS segment, 1 AS all_segments"
    body = ",\n    ".join(exprs)
    ctes = f"per_recipient AS ({per_recipient}),\n" if per_recipient else ""
    return (
        f"WITH {ctes}outcomes AS ({outcomes_sql})\n"
        f"SELECT variant_id, {seg}, sum(CASE WHEN is_assigned THEN 1 ELSE 0 END) AS assigned,\n"
        f"    sum(CASE WHEN is_assigned THEN 0 ELSE n_events END) AS unassigned_events,\n"
        f"    sum(CASE WHEN is_assigned AND n_events > 0 THEN 1 ELSE 0 END) AS matched,\n"
        f"    {body}\n"
        f"FROM outcomes {group}"
    )


def events_stats_sql(
    plan: Plan,
    dialect: Dialect,
    source: str = "valid_events",
    assignment: str = "assignment_src",
    as_of: float | None = None,
) -> tuple[Compiled, list[StatColumn]]:
    """One query from valid events and the assignment to the sufficient statistics.

    ``as_of`` (seconds since the epoch): count in each metric only the recipients whose outcome
    is final by then (:func:`loopexp.metrics.definitions.maturity_hours` after their send); the
    others are censored, not counted as non-responders.

    Events → one row per recipient (a hash aggregate, never materialised) → full outer join with
    the assignment → per variant (and segment) sums. Recipients on the assignment without any
    event have every measure 0; events of recipients not on it land in the ``variant_id IS NULL``
    group, whose ``unassigned_events`` counts them. Holdout recipients were not mailed: they are
    in the ``assigned`` population only, even with a stray event. The segment rows are split
    by send batch too (a wider key, not another grouping set): :func:`loopexp.metrics.periods.
    split_batches` adds them up again and counts recipients per batch.
    """
    p = Params(dialect)
    packed = _packed(plan, p, source, sent_at=True)

    def measure(m: Measure) -> str:  # unpacked after the join; 0 without events
        return packed.value(plan.alias(m), lambda c: f"coalesce(p.{c}, 0)")

    q = partial(quote, dialect)
    value_of = {id(m): f"v{plan.alias(m)}" for m in plan.measures}
    for d in plan.defs:  # identical measures share a column; map each def's objects to it
        for m in (d.numerator, d.ratio_denominator):
            if m is not None:
                value_of[id(m)] = f"v{plan.alias(m)}"
    cols = [f"CAST({measure(m)} AS DOUBLE) AS v{plan.alias(m)}" for m in plan.measures]
    cols += [f"CAST(a.{q(c)} AS DOUBLE) AS cov_{i}" for i, c in enumerate(plan.covariates)]
    matured: dict[str, str] | None = None
    if as_of is not None:
        censor, matured = matured_columns(plan.defs, dialect, p.bind, as_of)
        cols += censor
    outcomes = (
        "SELECT a.variant_id, a.segment, a.recipient_key IS NOT NULL AS is_assigned, "
        f"a.recipient_key IS NOT NULL AND a.variant_id <> {p.bind(HOLDOUT)} AS is_sent, "
        f"{measure(_DELIVERED)} > 0 AS is_delivered, "
        f"{measure(_OPENED)} > 0 AS is_opened, "
        "coalesce(p.n_events, 0) AS n_events, p.first_sent AS first_sent, "
        f"{send_batch_column(dialect.epoch('p.first_sent'))}, "
        + ", ".join(cols)
        + f" FROM {assignment} a FULL OUTER JOIN per_recipient p"
        " ON a.recipient_key = p.recipient_key"
    )
    exprs, columns = _stat_columns(plan, value_of, matured)
    # the last send of an assigned recipient (the read time), in the same pass
    exprs.append("max(CASE WHEN is_assigned THEN first_sent END) AS last_sent")
    sql = _grouped(outcomes, exprs, segmented=True, per_recipient=packed.sql, batches=True)
    return Compiled(sql, p.values), columns


def with_cap(d: MetricDef, cap: float) -> MetricDef:
    """``d`` with its numerator capped at ``cap`` (the lower of it and a cap it already has)."""
    old = d.numerator.cap
    value = float(cap) if old is None else min(float(old), float(cap))
    return d.model_copy(update={"numerator": d.numerator.model_copy(update={"cap": value})})


def cap_quantiles_sql(
    plan: Plan,
    percentiles: Mapping[str, float],
    dialect: Dialect,
    source: str = "valid_events",
    assignment: str = "assignment_src",
) -> tuple[Compiled, dict[str, str]] | None:
    """The percentile cap of each capped mean metric of ``plan``: one query, one row.

    Per metric named in ``percentiles`` (metric → percentile, e.g. 0.99) and of kind ``mean``:
    the percentile of its non-zero per-recipient numerator among the recipients of its
    denominator population (mailed only, unless the population is ``assigned``), pooled over
    arms, so one cap holds for every arm. Returns the query and the result column of each metric,
    or None when no metric is capped.
    """
    capped = [d for d in plan.defs if d.name in percentiles and d.kind == "mean"]
    if not capped:
        return None
    p = Params(dialect)
    per_recipient = _per_recipient(plan, p, source)
    outcomes = (
        "SELECT a.recipient_key IS NOT NULL AS is_assigned, "
        f"a.variant_id <> {p.bind(HOLDOUT)} AS is_sent, "
        f"p.{plan.alias(_DELIVERED)} > 0 AS is_delivered, "
        f"p.{plan.alias(_OPENED)} > 0 AS is_opened, p.* "
        f"FROM {assignment} a JOIN per_recipient p ON a.recipient_key = p.recipient_key"
    )
    exprs: list[str] = []
    aliases: dict[str, str] = {}
    for d in capped:
        v = plan.alias(d.numerator)
        value = f"CASE WHEN {_population(d)} AND {v} > 0 THEN {v} END"
        aliases[d.name] = f"q{len(aliases)}"
        exprs.append(f"{dialect.quantile(value, percentiles[d.name])} AS {aliases[d.name]}")
    sql = (
        f"WITH per_recipient AS ({per_recipient}),\noutcomes AS ({outcomes})\n"
        f"SELECT {', '.join(exprs)} FROM outcomes"
    )
    return Compiled(sql, p.values), aliases
