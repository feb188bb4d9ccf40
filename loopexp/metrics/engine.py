"""Compute metrics where the data lives (DuckDB) and bring back only sufficient statistics.

For every metric, variant and segment the engine returns ``n`` (denominator count), ``sum`` and
``sum_sq`` of the per-recipient numerator: enough for every test in :mod:`loopexp.stats`, a few
hundred numbers whatever the size of the event table. Malformed events are quarantined with a reason
(and optionally written to a Parquet file), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from loopexp.core import config
from loopexp.core.errors import EventsError
from loopexp.core.keys import redact_addresses
from loopexp.core.sql import sql_escape
from loopexp.events.schema import REQUIRED_COLUMNS
from loopexp.events.scope import SendScope, scope_note
from loopexp.events.validation import DUCKDB, DUPLICATE
from loopexp.metrics.checks import (
    QuarantineError,  # noqa: F401 (re-exported: its old home)
    check_assignment,
    check_quarantine_share,
    no_match_message,
)
from loopexp.metrics.compile import (
    MetricsError,
    Plan,
    StatColumn,
    cap_quantiles_sql,
    events_stats_sql,
    make_plan,
    quote,
    with_cap,
)
from loopexp.metrics.definitions import MetricDef, resolve_metric
from loopexp.metrics.links import links_sql, order_links
from loopexp.metrics.maturity import last_sent_of
from loopexp.metrics.periods import ENROLLED_AT, by_period, periods_sql, split_batches
from loopexp.metrics.sources import (
    ASSIGNMENT_COLUMNS,
    Source,
    attach,
    check_columns,
    columns_of,
    connect,
    first_line,
    source_name,
)
from loopexp.metrics.validated import quarantine_select, validate_events

ALL_SEGMENTS = "all"


@dataclass(frozen=True)
class CovariateSums:
    """Sums of one pre-period covariate ``x`` over a metric's population (regression adjustment).

    Attributes:
        sum: sum of x.
        sum_sq: sum of x².
        cross: sum of x · numerator.
        cross_den: sum of x · ratio denominator (ratio metrics only).
        with_covariates: sum of x · z for each covariate z listed after x in the metric's
            covariates (with ``sum_sq``, the Σxxᵀ of multi-covariate regression adjustment).
    """

    sum: float
    sum_sq: float
    cross: float
    cross_den: float | None = None
    with_covariates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupStats:
    """Sufficient statistics of one metric in one variant (and segment).

    Attributes:
        metric: metric name.
        variant_id: the variant (or ``holdout``).
        segment: lifecycle segment, or ``"all"`` for the whole audience.
        n: recipients in the metric's denominator population.
        sum: sum of the per-recipient numerator (successes, for a proportion).
        sum_sq: sum of squares of the numerator (equals ``sum`` for a proportion).
        den_sum: ratio metrics: sum of the per-recipient ratio denominator (else None).
        den_sum_sq: ratio metrics: its sum of squares.
        cross_sum: ratio metrics: sum of numerator · denominator (the delta method's covariance).
        covariates: per covariate name, its sums and cross sums with the numerator.
    """

    metric: str
    variant_id: str
    segment: str
    n: int
    sum: float
    sum_sq: float
    den_sum: float | None = None
    den_sum_sq: float | None = None
    cross_sum: float | None = None
    covariates: dict[str, CovariateSums] = field(default_factory=dict, compare=False)

    @property
    def mean(self) -> float:
        """Numerator sum over the population count (NaN when ``n`` is 0)."""
        return self.sum / self.n if self.n else float("nan")

    @property
    def value(self) -> float:
        """The metric's value: the mean, or for a ratio metric numerator sum / denominator sum."""
        if self.den_sum is None:
            return self.mean
        return self.sum / self.den_sum if self.den_sum else float("nan")


@dataclass
class MetricTable:
    """What the engine returns: sufficient statistics plus the counts an analysis must report."""

    stats: list[GroupStats]
    assigned: dict[str, int]
    """Recipients per group on the assignment (holdout included): the SRM input."""
    events: int
    quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    unassigned_events: int = 0
    """Valid events whose recipient is not on the assignment (other campaigns, seeds, typos)."""
    matched_recipients: int = 0
    """Assigned recipients with at least one valid event."""
    caps: dict[str, float] = field(default_factory=dict)
    """Per capped metric, the value its per-recipient numerator was winsorised at."""
    links: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    """Per-link human clicks per variant (``compute_metrics(..., links=True)``), else None."""
    last_sent_at: datetime | None = None
    """When the last assigned recipient was sent: the latest of their first send (or delivery)
    events, UTC (None: no such event)."""
    censored_at: datetime | None = None
    """With ``as_of``: only outcomes final at this time were counted (immature ones censored)."""
    assigned_by_period: dict[str, dict[str, int]] = field(default_factory=dict)
    """Day of enrolment (or of the send batch) → group → recipients: the SRM over time."""
    sent_by_batch: dict[str, dict[str, int]] = field(default_factory=dict)
    """Send batch (the UTC hour of the first send) → group → assigned recipients first sent in
    it: the SRM per send batch of a one-off send (:mod:`loopexp.metrics.periods`)."""

    def get(self, metric: str, variant_id: str, segment: str = ALL_SEGMENTS) -> GroupStats:
        """The statistics of one metric in one variant and segment."""
        for s in self.stats:
            if (s.metric, s.variant_id, s.segment) == (metric, variant_id, segment):
                return s
        raise KeyError(f"no statistics for metric={metric} variant={variant_id} segment={segment}")

    @property
    def segments(self) -> list[str]:
        """Segments present, without the ``all`` roll-up."""
        return sorted({s.segment for s in self.stats} - {ALL_SEGMENTS})

    def to_frame(self) -> pd.DataFrame:
        """One row per (segment, variant, metric) with n, sum, sum_sq, value (and ratio sums)."""
        columns = ["metric", "variant_id", "segment", "n", "sum", "sum_sq"]
        ratio = ["den_sum", "den_sum_sq", "cross_sum"]
        has_ratio = any(s.den_sum is not None for s in self.stats)
        keep = columns + ratio if has_ratio else columns
        frame = pd.DataFrame([{k: getattr(s, k) for k in keep} for s in self.stats], columns=keep)
        frame["value"] = [s.value for s in self.stats]
        return frame


def compute_metrics(
    events: Source,
    assignment: Source,
    metrics: Sequence[str | MetricDef],
    quarantine_path: str | Path | None = None,
    *,
    segments: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    max_quarantine_share: float | None = None,
    require_match: bool = False,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
    caps: Mapping[str, float] | None = None,
    links: bool = False,
    as_of: datetime | None = None,
    scope: SendScope | None = None,
) -> MetricTable:
    """Compute ``metrics`` per variant and segment from canonical events and an assignment.

    ``events`` is a Parquet or CSV path (globs allowed; files may differ in their columns) or a
    DataFrame in the canonical schema; ``assignment`` a Parquet/CSV path or DataFrame with
    ``recipient_key, segment, variant_id`` (and any covariate columns the metrics name).
    ``metrics`` are names from the standard library (:data:`loopexp.metrics.LIBRARY`) or
    :class:`MetricDef` objects (a spec's own). Every input is checked before it is used (see
    ``tests/HARDENING.md``): a bad file or assignment raises :class:`EventsError` saying which
    file, what is wrong and what to do; a malformed event is quarantined with a reason.

    The checks of a run (:func:`loopexp.analysis.analyze.analyze_files` passes them from the spec):
    ``segments`` / ``variants`` the assignment may hold; ``max_quarantine_share`` above which the
    run stops (:class:`QuarantineError`) instead of deciding on what is left; ``require_match``
    refuses events none of whose recipients is on the assignment. ``memory_limit`` and
    ``temp_directory`` bound DuckDB (see :func:`loopexp.core.config.duckdb_resources`).

    ``caps`` maps mean metrics to a percentile (e.g. 0.99): their per-recipient numerator is
    winsorised at that percentile of its non-zero values among mailed recipients in the metric's
    denominator, pooled over arms (one cap for all arms, so the comparison stays fair).

    ``links`` also returns the per-link click table (:func:`loopexp.metrics.links.link_clicks`)
    from the same validated events, without validating them a second time.

    ``as_of`` censors immature outcomes: each metric counts only the recipients whose outcome is
    final at that time (:mod:`loopexp.metrics.maturity`); None counts everyone.

    ``scope`` quarantines the events that are not this send's (another campaign's, or from before
    the assignment: :mod:`loopexp.events.scope`); they do not count toward the quarantine share.
    """
    defs = [m if isinstance(m, MetricDef) else resolve_metric(m) for m in metrics]
    with connect(memory_limit, temp_directory) as (con, limit):
        try:
            return _compute(
                con,
                events,
                assignment,
                defs,
                quarantine_path,
                segments=segments,
                variants=variants,
                max_quarantine_share=max_quarantine_share,
                require_match=require_match,
                caps=caps,
                links=links,
                as_of=as_of,
                scope=scope,
            )
        except duckdb.OutOfMemoryException as exc:
            raise EventsError(
                f"DuckDB ran out of memory (limit {limit}) computing metrics from "
                f"{source_name(events)}: {redact_addresses(first_line(exc))}. Give it more memory "
                f"(spec data.memory_limit or ${config.DUCKDB_MEMORY_LIMIT}) or a folder with free "
                f"disk space to spill to (data.temp_directory or ${config.DUCKDB_TEMP_DIR})."
            ) from None
        except duckdb.Error as exc:
            raise EventsError(
                f"{source_name(events)} (events) with {source_name(assignment)} (assignment): "
                f"DuckDB could not process the inputs: {redact_addresses(first_line(exc))}. "
                "A file may be corrupt or not in the canonical schema: export it again, or "
                "convert it with `loopexp ingest`."
            ) from None


def _compute(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    assignment: Source,
    defs: Sequence[MetricDef],
    quarantine_path: str | Path | None,
    *,
    segments: Sequence[str] | None,
    variants: Sequence[str] | None,
    max_quarantine_share: float | None,
    require_match: bool,
    caps: Mapping[str, float] | None = None,
    links: bool = False,
    as_of: datetime | None = None,
    scope: SendScope | None = None,
) -> MetricTable:
    plan = make_plan(defs)
    _attach_inputs(con, events, assignment, plan, segments, variants)
    n_events, reasons = _validate(con, events, quarantine_path, max_quarantine_share, scope)
    quarantined = sum(reasons.values())
    # Capped mean metrics: the cap is a percentile of the per-recipient values (a first query),
    # then applied through Measure.cap / least() in the one query from events to the statistics.
    cap_values = cap_values_of(con, cap_quantiles_sql(plan, caps or {}, DUCKDB))
    if cap_values:
        plan = make_plan(
            [with_cap(d, cap_values[d.name]) if d.name in cap_values else d for d in defs]
        )
    # One query from valid events to the statistics (and the unassigned / matched counts).
    query, columns = events_stats_sql(plan, DUCKDB, as_of=epoch_of(as_of))
    cursor = con.execute(query.sql, query.params)
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    rows, batches = split_batches(rows)
    matched = sum(int(r["matched"] or 0) for r in rows if int(r["all_segments"]))
    if require_match and not matched:
        message = no_match_message(con, events, assignment, n_events, quarantined)
        raise EventsError(message + scope_note(reasons))
    stats, assigned = collect_stats(rows, columns)
    link_table = None
    if links:  # from the same validated events, not a second validation
        link_query = links_sql(DUCKDB)
        link_table = order_links(con.execute(link_query.sql, link_query.params).df())
    return MetricTable(
        stats=stats,
        assigned=assigned,
        events=int(n_events),
        quarantined=quarantined,
        quarantine_reasons=reasons,
        unassigned_events=unassigned_events(rows),
        matched_recipients=matched,
        caps=cap_values,
        links=link_table,
        last_sent_at=utc(last_sent_of(rows)),
        censored_at=as_of,
        assigned_by_period=(
            by_period(con.execute(periods_sql("assignment_raw")).fetchall())
            if ENROLLED_AT in columns_of(con, "assignment_raw")  # the assignment alone: cheap
            else {}
        ),
        sent_by_batch=batches,
    )


def _attach_inputs(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    assignment: Source,
    plan: Plan,
    segments: Sequence[str] | None,
    variants: Sequence[str] | None,
) -> None:
    """Views ``raw_events`` and ``assignment_src`` (keys as text, and covariates), checked."""
    attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
    attach(con, "assignment_raw", assignment, "assignment", ASSIGNMENT_COLUMNS)
    check_columns(con, "assignment_raw", plan.covariates, assignment)  # the metrics' covariates
    con.execute(
        "CREATE VIEW assignment_src AS SELECT "
        + ", ".join(f"TRY_CAST({c} AS VARCHAR) AS {c}" for c in ASSIGNMENT_COLUMNS)
        + "".join(f", {quote(DUCKDB, c)}" for c in plan.covariates if c not in ASSIGNMENT_COLUMNS)
        + " FROM assignment_raw"
    )
    check_assignment(con, assignment, segments, variants)


def _validate(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    quarantine_path: str | Path | None,
    max_quarantine_share: float | None,
    scope: SendScope | None = None,
) -> tuple[int, dict[str, int]]:
    """Validate the events (views ``valid_events``, ...); the event count and the reasons' counts.

    Writes the quarantine file when asked, then raises :class:`QuarantineError` when more than
    ``max_quarantine_share`` of the events were quarantined.
    """
    has_candidates = validate_events(con, scope)
    counts = dict(
        con.execute("SELECT quarantine_reason, n FROM event_summary WHERE by_reason").fetchall()
    )
    n_events = int(sum(counts.values()))
    duplicates = 0
    if has_candidates:  # exact: the candidates (counted per hash) less the one kept per key
        (duplicates,) = con.execute(
            "SELECT (SELECT sum(n) FROM event_summary WHERE NOT by_reason) "
            "- (SELECT count(*) FROM dup_kept)"
        ).fetchone()
    reasons = {k: v for k, v in counts.items() if k is not None}
    if duplicates:
        reasons[DUPLICATE] = duplicates
    reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    if quarantine_path is not None and reasons:
        con.execute(
            f"COPY ({quarantine_select(con)}) TO '{sql_escape(quarantine_path)}' (FORMAT parquet)"
        )
    check_quarantine_share(events, n_events, reasons, max_quarantine_share, quarantine_path)
    return n_events, reasons


def epoch_of(when: datetime | None) -> float | None:
    """Seconds since the epoch of an aware (or UTC-naive) time; None stays None."""
    return None if when is None else utc(when).timestamp()


def utc(when: datetime | None) -> datetime | None:
    """``when`` as an aware UTC datetime (a naive one is taken as UTC, as the event table is)."""
    if when is None:
        return None
    when = pd.Timestamp(when).to_pydatetime()
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def unassigned_events(rows: Sequence[dict[str, Any]]) -> int:
    """Valid events of recipients not on the assignment, from a compiled statistics query."""
    return sum(
        int(r["unassigned_events"] or 0)
        for r in rows
        if r["variant_id"] is None and int(r["all_segments"])
    )


def collect_stats(
    rows: Sequence[dict[str, Any]], columns: Sequence[StatColumn]
) -> tuple[list[GroupStats], dict[str, int]]:
    """GroupStats (and recipients per group) from the rows of a compiled statistics query.

    Shared by every engine and input, so DuckDB and Spark return identical records. Raises
    :class:`MetricsError` when a covariate or outcome value is missing in some population.
    """
    if any(r["variant_id"] is None and r["assigned"] for r in rows):
        raise MetricsError(
            "some rows have no variant_id; every recipient of the assignment or outcome table "
            "needs one (drop the rows, or assign them)"
        )
    rows = [r for r in rows if r["variant_id"] is not None]  # the unassigned events' group
    ordered = sorted(
        rows, key=lambda r: (-int(r["all_segments"]), str(r["segment"]), str(r["variant_id"]))
    )
    stats: list[GroupStats] = []
    assigned: dict[str, int] = {}
    by_metric: dict[str, list[StatColumn]] = {}
    for c in columns:
        by_metric.setdefault(c.metric, []).append(c)
    for row in ordered:
        segment = ALL_SEGMENTS if int(row["all_segments"]) else str(row["segment"])
        variant = str(row["variant_id"])
        if segment == ALL_SEGMENTS:
            assigned[variant] = int(row["assigned"])
        for metric, cols in by_metric.items():
            values = {c.stat: row[c.alias] for c in cols}
            if "missing_value" in values:
                if values["missing_value"]:
                    raise MetricsError(
                        f"outcome column {metric.removeprefix('column:')!r} has "
                        f"{int(values['missing_value'])} missing "
                        f"value(s) in variant {variant!r}; fill them (0 when nothing happened) or "
                        "drop those rows"
                    )
                continue
            covariates = {}
            for key, value in values.items():
                missing = key.endswith(":missing") and key.count(":") == 2
                if key.startswith("cov:") and missing and value:
                    raise MetricsError(
                        f"covariate {key.split(':')[1]!r} of metric {metric!r} is missing for "
                        f"{int(value)} recipient(s) of variant {variant!r}; fill or impute it"
                    )
            for name in dict.fromkeys(k.split(":")[1] for k in values if k.startswith("cov:")):
                cross_den = values.get(f"cov:{name}:cross_den")
                covariates[name] = CovariateSums(
                    sum=float(values[f"cov:{name}:sum"] or 0.0),
                    sum_sq=float(values[f"cov:{name}:sum_sq"] or 0.0),
                    cross=float(values[f"cov:{name}:cross"] or 0.0),
                    cross_den=None if cross_den is None else float(cross_den),
                    with_covariates={
                        k.split(":")[3]: float(v or 0.0)
                        for k, v in values.items()
                        if k.startswith(f"cov:{name}:with:")
                    },
                )
            optional = {
                k: (None if k not in values else float(values[k] or 0.0))
                for k in ("den_sum", "den_sum_sq", "cross_sum")
            }
            stats.append(
                GroupStats(
                    metric=metric,
                    variant_id=variant,
                    segment=segment,
                    n=int(values["n"] or 0),
                    # an empty group sums to 0 (SQL gives NULL)
                    sum=float(values["sum"] or 0.0),
                    sum_sq=float(values["sum_sq"] or 0.0),
                    covariates=covariates,
                    **optional,
                )
            )
    return stats, dict(sorted(assigned.items()))


def cap_values_of(con: duckdb.DuckDBPyConnection, compiled: Any) -> dict[str, float]:
    """Run a compiled cap-quantile query (events or outcome table): metric → cap value."""
    if compiled is None:
        return {}
    query, aliases = compiled
    cursor = con.execute(query.sql, query.params)
    names = [d[0] for d in cursor.description]
    row = dict(zip(names, cursor.fetchone(), strict=True))
    return {m: float(row[a]) for m, a in aliases.items() if row[a] is not None}
