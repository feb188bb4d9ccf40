"""Analysis of one iteration: sufficient statistics in, :class:`ExperimentResults` out.

This is the step the notebook presents: SRM check, per-variant values, every challenger against
control on every metric (with multiplicity control), guardrails, segments, and the decision.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopexp.analysis.compare import (
    MIN_PER_ARM,
    CovariateMoments,
    compare_all,
)
from loopexp.analysis.decide import decide
from loopexp.analysis.guardrails import guardrail_results
from loopexp.analysis.maturity import read_time, webhook_retry_lag
from loopexp.analysis.opens import spec_opens
from loopexp.analysis.policy import exploration_view
from loopexp.analysis.results import (
    DataInfo,
    ExperimentInfo,
    ExperimentResults,
    HeterogeneityResult,
    IncrementalityResult,
    LinkClicks,
    MetricValue,
    PeriodSRM,
    SegmentResult,
    SRMResult,
    VariantResult,
)
from loopexp.core.errors import InputError
from loopexp.design.spec import ExperimentSpec
from loopexp.events.scope import send_scope
from loopexp.metrics.definitions import HOLDOUT, MetricDef
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats, MetricTable, compute_metrics
from loopexp.stats import srm_check
from loopexp.stats.adjustment import Moments
from loopexp.stats.heterogeneity import cochran_q
from loopexp.stats.incrementality import holdout_comparisons
from loopexp.stats.srm import srm_by_period

#: Per-assigned (intent-to-treat) metrics the holdout comparison reports, when there is a holdout.
INCREMENTALITY_METRICS = ("conversion_per_assigned", "revenue_per_assigned")


def moments_from_table(
    table: MetricTable, covariates: Sequence[str]
) -> dict[tuple[str, str], Moments]:
    """Regression-adjustment moments per (metric, variant) from the engine's covariate sums.

    The one source of covariate sums: :class:`GroupStats` ``covariates`` (whole audience), as the
    compiled query returns them when the metrics name ``covariates``. Metrics without sums for
    every covariate, and ratio metrics (adjusted on two measures, not one), are left out.
    """
    out: dict[tuple[str, str], Moments] = {}
    if not covariates:
        return out
    for s in table.stats:
        sums = s.covariates
        if s.segment != ALL_SEGMENTS or s.den_sum is not None:
            continue
        if any(c not in sums for c in covariates):
            continue

        def pair(a: str, b: str, sums: dict = sums) -> float | None:
            if a == b:
                return sums[a].sum_sq
            got = sums[a].with_covariates.get(b)
            return sums[b].with_covariates.get(a) if got is None else got

        xx = [[pair(a, b) for b in covariates] for a in covariates]
        if any(v is None for row in xx for v in row):
            continue
        out[(s.metric, s.variant_id)] = Moments.from_sums(
            s.n,
            s.sum,
            s.sum_sq,
            [sums[c].sum for c in covariates],
            xx,
            [sums[c].cross for c in covariates],
        )
    return out


def analyze(
    spec: ExperimentSpec,
    table: MetricTable,
    source: str = "",
    fingerprint: str = "",
    covariate_moments: CovariateMoments | None = None,
    as_of: datetime | None = None,
    retry_lag_hours: float = 0.0,
) -> ExperimentResults:
    """Analyse one iteration of ``spec`` from the engine's sufficient statistics.

    With ``spec.decision_method == "sequential"`` every comparison is always-valid (p-values and
    confidence sequences valid at any look on the cumulative data), with the same multiplicity
    control. ``covariate_moments`` (per (metric, variant): n, sums, sums of squares and cross
    products on ``spec.covariates``) turns the whole-audience comparisons of those metrics into
    regression-adjusted ones. With a holdout, ``incrementality`` compares each mailed arm and all
    of them pooled with it on the per-assigned metrics the table has.

    ``as_of`` (default: the table's censoring time, else now) dates the read: a fixed-horizon
    one-off send before its final read time keeps testing (:mod:`loopexp.analysis.maturity`);
    ``retry_lag_hours`` (events received by webhook) moves that time later by the retry lag.
    """
    if covariate_moments is None and spec.covariates:
        covariate_moments = moments_from_table(table, spec.covariates)
    table = _IndexedTable.of(table)
    _check_groups(spec, table)
    srm = srm_check(table.assigned, spec.expected_shares(), spec.decision.srm_alpha)
    srm_result = SRMResult(
        p_value=srm.p_value, ok=srm.ok, expected=srm.expected, observed=srm.observed
    )
    delivery = _delivery_srm(spec, table)
    periods = _period_srm(spec, table)

    variants = _variants(spec, table, ALL_SEGMENTS)
    by_segment, not_compared = compare_all(spec, table, [ALL_SEGMENTS], covariate_moments)
    comparisons = by_segment[ALL_SEGMENTS]
    guardrails = guardrail_results(spec, table)
    primary = [c for c in comparisons if c.metric == spec.primary_metric]
    decision = decide(
        spec,
        primary,
        guardrails,
        srm_result,
        not_compared=[n for n in not_compared if n.metric == spec.primary_metric],
        delivery_srm=delivery,
        read=read_time(spec, table.last_sent_at, as_of or table.censored_at, retry_lag_hours),
        period_srm=periods,
    )

    seg_comparisons, seg_not_compared = compare_all(spec, table, table.segments)
    segments = [
        SegmentResult(
            segment=seg,
            variants=_variants(spec, table, seg),
            comparisons=seg_comparisons[seg],
        )
        for seg in table.segments
    ]
    return ExperimentResults(
        experiment=ExperimentInfo.from_spec(spec),
        data=DataInfo(
            source=source,
            fingerprint=fingerprint,
            recipients=sum(table.assigned.values()),
            events=table.events,
            quarantined=table.quarantined,
            quarantine_reasons=table.quarantine_reasons,
            unassigned_events=table.unassigned_events,
        ),
        srm=srm_result,
        variants=variants,
        comparisons=comparisons,
        segments=segments,
        decision=decision,
        not_compared=not_compared + seg_not_compared,
        delivery_srm=delivery,
        heterogeneity=_heterogeneity(spec, table),
        incrementality=_incrementality(spec, table),
        srm_by_period=periods,
    )


def _check_groups(spec: ExperimentSpec, table: MetricTable) -> None:
    unknown = set(table.assigned) - set(spec.expected_shares())
    if unknown:
        raise ValueError(
            f"assignment has groups {sorted(unknown)} that spec {spec.name!r} does not define; "
            "was the assignment made from another spec?"
        )


def engine_metrics(spec: ExperimentSpec) -> list[str]:
    """Metrics the engine computes for ``spec``: its own, plus the holdout's per-assigned ones."""
    extra = INCREMENTALITY_METRICS if spec.audience.holdout > 0 else ()
    return list(dict.fromkeys([*spec.all_metrics, *extra]))


def engine_defs(spec: ExperimentSpec) -> list[MetricDef]:
    """Definitions of :func:`engine_metrics`, with the spec's covariates on non-ratio metrics.

    With ``spec.covariates`` (columns of the assignment), the compiled query then returns the
    regression adjustment's covariate sums (see :func:`moments_from_table`).
    """
    defs = [spec.metric(n) for n in engine_metrics(spec)]
    if not spec.covariates:
        return defs
    return [
        d
        if d.kind == "ratio"
        else d.model_copy(
            update={"covariates": list(dict.fromkeys([*d.covariates, *spec.covariates]))}
        )
        for d in defs
    ]


def _incrementality(spec: ExperimentSpec, table: MetricTable) -> list[IncrementalityResult]:
    """Each mailed arm and all pooled against the holdout, per assigned recipient."""
    if spec.audience.holdout <= 0 or table.assigned.get(HOLDOUT, 0) < MIN_PER_ARM:
        return []
    rule = spec.decision
    tuning_n = spec.sequential_tuning_n if spec.decision_method == "sequential" else None
    out = []
    for name in INCREMENTALITY_METRICS:
        try:
            groups = {g: table.get(name, g) for g in [*(v.id for v in spec.variants), HOLDOUT]}
        except KeyError:
            continue  # the engine was not asked for this metric
        if min(s.n for s in groups.values()) < MIN_PER_ARM:
            continue
        records = holdout_comparisons(
            name, spec.metric(name).kind, groups, HOLDOUT, rule.alpha, rule.correction, tuning_n
        )
        out += [
            IncrementalityResult(
                metric=r.metric,
                arm=r.arm,
                n_arm=r.n_arm,
                n_holdout=r.n_holdout,
                arm_value=r.effect.treatment_value,
                holdout_value=r.effect.control_value,
                estimate=r.effect.estimate,
                ci_low=r.effect.ci_low,
                ci_high=r.effect.ci_high,
                rel_lift=r.effect.rel_lift,
                rel_ci_low=r.effect.rel_ci_low,
                rel_ci_high=r.effect.rel_ci_high,
                p_value=r.effect.p_value,
                p_value_adjusted=r.p_value_adjusted,
                incremental_total=r.incremental_total,
                incremental_ci_low=r.incremental_ci_low,
                incremental_ci_high=r.incremental_ci_high,
                ci_level=r.ci_level,
                method=r.effect.method,
            )
            for r in records
        ]
    return out


class _IndexedTable(MetricTable):
    """A MetricTable whose ``get`` is a dict lookup.

    ``MetricTable.get`` scans the list: with 1,000 comparisons that scan alone took ~0.3 s.
    """

    @classmethod
    def of(cls, table: MetricTable) -> _IndexedTable:
        if isinstance(table, cls):
            return table
        indexed = cls(**{f.name: getattr(table, f.name) for f in dataclasses.fields(table)})
        indexed._index = {(s.metric, s.variant_id, s.segment): s for s in table.stats}
        return indexed

    def get(self, metric: str, variant_id: str, segment: str = ALL_SEGMENTS) -> GroupStats:
        try:
            return self._index[(metric, variant_id, segment)]
        except KeyError:
            raise KeyError(
                f"no statistics for metric={metric} variant={variant_id} segment={segment}"
            ) from None


def _delivery_srm(spec: ExperimentSpec, table: MetricTable) -> SRMResult | None:
    """Check the delivered counts (the denominator of delivered-based metrics) against the split.

    A send that failed for one variant leaves the assignment balanced but the delivered
    population not: every delivered-based comparison would then compare different populations.
    """
    name = next((m for m in spec.all_metrics if spec.metric(m).denominator == "delivered"), None)
    if name is None:
        return None
    observed = {}
    for v in spec.variants:
        try:
            observed[v.id] = table.get(name, v.id, ALL_SEGMENTS).n
        except KeyError:
            observed[v.id] = 0
    total = sum(v.weight for v in spec.variants)
    shares = {v.id: v.weight / total for v in spec.variants}
    check = srm_check(observed, shares, spec.decision.srm_alpha)
    return SRMResult(
        p_value=check.p_value, ok=check.ok, expected=check.expected, observed=check.observed
    )


def _period_srm(spec: ExperimentSpec, table: MetricTable) -> list[PeriodSRM]:
    """The split of the mailed variants per day of enrolment and per send batch (one-off sends).

    Each family with two or more periods is Bonferroni-corrected on its own. Not per batch
    when the variants are send times themselves (a send-time test): they go out at different
    hours by design.
    """
    total = sum(v.weight for v in spec.variants)
    shares = {v.id: v.weight / total for v in spec.variants}
    alpha = spec.decision.srm_alpha
    families = [("day", getattr(table, "assigned_by_period", {}))]
    if spec.enrolment == "one_off" and not any(v.send_time for v in spec.variants):
        families.append(("send_batch", getattr(table, "sent_by_batch", {})))
    out = []
    for kind, counts in families:
        if len(counts) < 2:
            continue
        checks = srm_by_period(counts, shares, alpha)
        level = alpha / max(1, len(checks))
        out += [
            PeriodSRM(
                period=p, p_value=c.p_value, ok=c.ok, alpha=level, observed=c.observed, kind=kind
            )
            for p, c in checks
        ]
    return out


def _variants(spec: ExperimentSpec, table: MetricTable, segment: str) -> list[VariantResult]:
    out = []
    for v in spec.variants:
        metrics = {}
        n = 0
        for name in spec.all_metrics:
            try:
                s = table.get(name, v.id, segment)
            except KeyError:
                continue
            metrics[name] = MetricValue(
                value=s.value if s.n else None, numerator=s.sum, denominator=s.n
            )
            if spec.metric(name).denominator == "sent":
                n = s.n
        if segment == ALL_SEGMENTS:
            n = table.assigned.get(v.id, 0)
        elif not n:
            n = max((m.denominator for m in metrics.values()), default=0)
        out.append(VariantResult(id=v.id, is_control=v.id == spec.control, n=n, metrics=metrics))
    return out


def _heterogeneity(spec: ExperimentSpec, table: MetricTable) -> list[HeterogeneityResult]:
    """Cochran's Q across segments of each challenger's log ratio on the primary metric."""
    metric = spec.metric(spec.primary_metric)
    if metric.kind == "ratio":  # Cochran's Q here is for proportions and means
        return []
    out = []
    for ch in spec.challengers:
        cells = []
        for seg in table.segments:
            try:
                t = table.get(metric.name, ch.id, seg)
                c = table.get(metric.name, spec.control, seg)
            except KeyError:
                continue
            cells.append((seg, t.n, t.sum, t.sum_sq, c.n, c.sum, c.sum_sq))
        result = cochran_q(metric.kind, cells)
        if result is not None:
            q, df, p, i2, used = result
            out.append(
                HeterogeneityResult(
                    metric=metric.name,
                    variant=ch.id,
                    q=q,
                    df=df,
                    p_value=p,
                    i_squared=i2,
                    segments=used,
                )
            )
    return out


def data_fingerprint(*sources: str | Path) -> str:
    """SHA-256 over the bytes of the given files (globs expanded, sorted)."""
    digest = hashlib.sha256()
    for source in sources:
        matches = sorted(glob.glob(str(source))) or [str(source)]
        for name in matches:
            digest.update(Path(name).name.encode())
            with open(name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def spec_caps(spec: ExperimentSpec) -> dict[str, float] | None:
    """Percentile caps of the spec's mean metrics (``decision.cap_percentile``; None: uncapped)."""
    pct = spec.decision.cap_percentile
    if pct is None:
        return None
    return {m: pct for m in spec.all_metrics if spec.metric(m).kind == "mean"}


def analyze_files(
    spec: ExperimentSpec,
    events_path: str | Path,
    assignment_path: str | Path,
    quarantine_path: str | Path | None = None,
    as_of: datetime | None = None,
    spec_path: str | Path | None = None,
) -> tuple[MetricTable, ExperimentResults]:
    """Compute the spec's metrics from files in DuckDB and analyse them; return both.

    Read as of ``as_of`` (default: now, what a scheduled run sees): outcomes not yet final are
    censored, and a fixed-horizon one-off send is read only after its final read time. Events
    received by webhook are final the providers' retry lag later again (both the censoring and
    the final read time: :func:`loopexp.analysis.maturity.webhook_retry_lag`).

    The inputs are held to the spec: assignment groups and segments it defines, at most
    ``data.max_quarantine_share`` of events quarantined, at least one event of an assigned
    recipient, DuckDB within ``data.memory_limit``; mean metrics are capped at
    ``decision.cap_percentile``. With ``data.history`` (relative to the folder of ``spec_path``)
    the results gain the ``opens`` section.
    """
    if spec.flow is not None:  # judged from entry with windows, not per delivered mail
        raise InputError(
            f"spec {spec.name!r} is a flow test: analyse it with "
            "loopexp.analysis.flow.analyze_flow_files (`loopexp run` picks the flow notebook)"
        )
    caps = spec_caps(spec)
    explore = exploration_view(spec, assignment_path)  # issue 27: None without policy rules
    as_of = as_of or datetime.now(UTC)
    lag = webhook_retry_lag(events_path)  # webhook events: retries may still bring outcomes
    table = compute_metrics(
        events_path,
        assignment_path if explore is None else explore.assignment,
        engine_defs(spec),
        quarantine_path,
        caps=caps,
        segments=[s.value for s in spec.audience.segments],
        variants=list(spec.expected_shares()) if explore is None else explore.variants,
        max_quarantine_share=spec.data.max_quarantine_share,
        require_match=True,
        memory_limit=spec.data.memory_limit,
        temp_directory=spec.data.temp_directory,
        links=True,  # which links drew the human clicks, for the report and MLflow
        as_of=as_of - timedelta(hours=lag),  # matured = window and retry lag both passed
        scope=send_scope(spec.data.campaign_ids, assignment_path),  # issue 28: this send's only
    )
    if explore is not None:
        explore.close()  # the relabelled copy of the assignment was the engine's input only
        table, n_policy = explore.strip(table)
    results = analyze(
        spec if explore is None else explore.spec,
        table,
        source=str(events_path),
        fingerprint=data_fingerprint(events_path, assignment_path),
        as_of=as_of,
        retry_lag_hours=lag,
    )
    if explore is not None:
        results = explore.annotate(results, spec, n_policy)
    if table.links is not None:
        results.links = [LinkClicks(**row) for row in table.links.to_dict(orient="records")]
    if spec.data.history is not None:  # issue 28: opens robust to Apple MPP
        results.opens = spec_opens(spec, events_path, assignment_path, spec_path)
    return table, results
