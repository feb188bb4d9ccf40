"""Compile metric definitions to SQL over an outcome table (one row per recipient, metric columns).

The outcome-table side of :mod:`loopexp.metrics.compile` (same populations, statistics and caps,
both dialects), in its own module to keep each under the size limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

from loopexp.events.validation import Dialect
from loopexp.metrics.compile import (
    Compiled,
    MetricsError,
    Params,
    Plan,
    StatColumn,
    _capped,
    _grouped,
    _population,
    _stat_columns,
    quote,
)
from loopexp.metrics.definitions import HOLDOUT, STANDARD_MEASURES, Measure


def outcome_measure_column(m: Measure) -> str:
    """The outcome-table column a measure reads: its ``column``, or a standard measure's name."""
    if m.column is not None:
        return m.column
    for name, standard in STANDARD_MEASURES.items():
        if standard == m:
            return name
    raise MetricsError(
        "this metric counts events (numerator `events: ...`), which an outcome table does not "
        "have; define it with `column: <outcome column>` instead"
    )


def outcome_columns_needed(plan: Plan) -> dict[str, str]:
    """Outcome-table columns the plan reads, with the metric that needs each (for errors)."""
    need: dict[str, str] = {"variant_id": "every metric"}
    for d in plan.defs:
        for m in (d.numerator, d.ratio_denominator):
            if m is not None:
                try:
                    need.setdefault(outcome_measure_column(m), d.name)
                except MetricsError as exc:
                    raise MetricsError(f"metric {d.name!r}: {exc}") from None
        if d.denominator in ("delivered", "opened"):
            need.setdefault(d.denominator, f"{d.name} (denominator {d.denominator})")
        for c in d.covariates:
            need.setdefault(c, f"{d.name} (covariate)")
    return need


def _outcome_rows(
    plan: Plan, p: Params, columns: Iterable[str], table: str
) -> tuple[str, dict[int, str], dict[str, str], bool]:
    """The outcome table as the statistics read it.

    Returns the query, each measure's value column, the columns read (``name|cap`` → alias) and
    whether the table has segments.
    """
    present = set(columns)
    q = partial(quote, p.dialect)
    value_of: dict[int, str] = {}
    cols: list[str] = []
    names: dict[str, str] = {}
    for d in plan.defs:
        for m in (d.numerator, d.ratio_denominator):
            if m is None:
                continue
            column = outcome_measure_column(m)
            key = f"{column}|{m.cap}"
            if key not in names:
                names[key] = f"y{len(names)}"
                expr = _capped(f"CAST({q(column)} AS DOUBLE)", m, p)
                cols.append(f"{expr} AS {names[key]}")
            value_of[id(m)] = names[key]
    flags = {
        f"is_{c}": f"CAST({q(c)} AS DOUBLE) > 0" if c in present else "NULL"
        for c in ("delivered", "opened")
    }
    cols += [f"CAST({q(c)} AS DOUBLE) AS cov_{i}" for i, c in enumerate(plan.covariates)]
    segmented = "segment" in present
    outcomes = (
        "SELECT CAST(variant_id AS STRING) AS variant_id, "
        + (f"CAST({q('segment')} AS STRING) AS segment, " if segmented else "")
        + f"CAST(variant_id AS STRING) <> {p.bind(HOLDOUT)} AS is_sent, TRUE AS is_assigned, "
        + "0 AS n_events, "
        + ", ".join(f"{v} AS {k}" for k, v in flags.items())
        + (", " if cols else "")
        + ", ".join(cols)
        + f" FROM {table}"
    )
    return outcomes, value_of, names, segmented


def outcome_stats_sql(
    plan: Plan, dialect: Dialect, columns: Iterable[str], table: str = "outcomes_src"
) -> tuple[Compiled, list[StatColumn]]:
    """Sufficient statistics from an outcome table (one row per recipient, metric columns).

    ``columns`` are the table's actual columns: a ``segment`` column adds the per-segment rows;
    ``delivered`` / ``opened`` (0/1 or boolean) define those populations when a metric uses them.
    """
    p = Params(dialect)
    outcomes, value_of, names, segmented = _outcome_rows(plan, p, columns, table)
    exprs, stat_cols = _stat_columns(plan, value_of)
    # Missing outcome values are counted (and refused) rather than averaged over silently.
    for key, alias in names.items():
        column = key.split("|")[0]
        # (keyed "column:<name>", never a metric's name: a metric may be named as its column)
        stat_cols.append(StatColumn(f"column:{column}", "missing_value", f"s{len(stat_cols)}"))
        exprs.append(f"sum(CASE WHEN {alias} IS NULL THEN 1 ELSE 0 END) AS {stat_cols[-1].alias}")
    return Compiled(_grouped(outcomes, exprs, segmented), p.values), stat_cols


def outcome_cap_quantiles_sql(
    plan: Plan,
    percentiles: Mapping[str, float],
    dialect: Dialect,
    columns: Iterable[str],
    table: str = "outcomes_src",
) -> tuple[Compiled, dict[str, str]] | None:
    """:func:`cap_quantiles_sql` for an outcome table: the same percentile, population and pooling.

    Per capped mean metric: the percentile of its non-zero numerator column among the rows of its
    denominator population (mailed rows only, unless the population is ``assigned``), pooled over
    arms. None when no metric is capped.
    """
    capped = [d for d in plan.defs if d.name in percentiles and d.kind == "mean"]
    if not capped:
        return None
    p = Params(dialect)
    outcomes, value_of, _, _ = _outcome_rows(plan, p, columns, table)
    exprs: list[str] = []
    aliases: dict[str, str] = {}
    for d in capped:
        v = value_of[id(d.numerator)]
        value = f"CASE WHEN {_population(d)} AND {v} > 0 THEN {v} END"
        aliases[d.name] = f"q{len(aliases)}"
        exprs.append(f"{dialect.quantile(value, percentiles[d.name])} AS {aliases[d.name]}")
    sql = f"WITH outcomes AS ({outcomes})\nSELECT {', '.join(exprs)} FROM outcomes"
    return Compiled(sql, p.values), aliases
