"""Analysis of one iteration: sufficient statistics in, :class:`ExperimentResults` out.

This is the step the notebook presents: SRM check, per-variant values, every challenger against
control on every metric (with multiplicity control), guardrails, segments, and the decision.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

from loopexp.decide import decide
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats, MetricTable, compute_metrics
from loopexp.results import (
    Comparison,
    DataInfo,
    ExperimentInfo,
    ExperimentResults,
    GuardrailResult,
    MetricValue,
    SegmentResult,
    SRMResult,
    VariantResult,
)
from loopexp.spec import ExperimentSpec
from loopexp.stats import (
    adjust_pvalues,
    chance_to_beat,
    compare_means,
    compare_proportions,
    srm_check,
)
from loopexp.stats.ratio import compare_ratios


def analyze(
    spec: ExperimentSpec,
    table: MetricTable,
    source: str = "",
    fingerprint: str = "",
) -> ExperimentResults:
    """Analyse one iteration of ``spec`` from the engine's sufficient statistics."""
    unknown = set(table.assigned) - set(spec.expected_shares())
    if unknown:
        raise ValueError(
            f"assignment has groups {sorted(unknown)} that spec {spec.name!r} does not define; "
            "was the assignment made from another spec?"
        )
    srm = srm_check(table.assigned, spec.expected_shares(), spec.decision.srm_alpha)
    srm_result = SRMResult(
        p_value=srm.p_value, ok=srm.ok, expected=srm.expected, observed=srm.observed
    )

    variants = _variants(spec, table, ALL_SEGMENTS)
    comparisons = _comparisons(spec, table, ALL_SEGMENTS)
    guardrails = _guardrails(spec, comparisons)
    primary = [c for c in comparisons if c.metric == spec.primary_metric]
    decision = decide(spec, primary, guardrails, srm_result)

    segments = [
        SegmentResult(
            segment=seg,
            variants=_variants(spec, table, seg),
            comparisons=_comparisons(spec, table, seg),
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
    )


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


def _comparisons(spec: ExperimentSpec, table: MetricTable, segment: str) -> list[Comparison]:
    """Every challenger against control on every metric; p-values adjusted per family.

    Families: the primary metric across challengers (the decision's family), and all other
    (metric, challenger) pairs together. Guardrails use unadjusted intervals: a veto should be easy.
    """
    rule = spec.decision
    raw: list[tuple[str, str, object]] = []
    for name in spec.all_metrics:
        metric = spec.metric(name)
        for ch in spec.challengers:
            try:
                t = table.get(name, ch.id, segment)
                c = table.get(name, spec.control, segment)
            except KeyError:
                continue
            if min(t.n, c.n) < 2:
                continue
            if metric.kind == "ratio":
                if not (t.den_sum and c.den_sum):
                    continue  # no denominator in an arm: not a comparison, never "no difference"
                effect = compare_ratios(_ratio_sums(t), _ratio_sums(c), rule.alpha)
            elif metric.kind == "proportion":
                effect = compare_proportions(t.sum, t.n, c.sum, c.n, rule.alpha)
            else:
                effect = compare_means(t.n, t.sum, t.sum_sq, c.n, c.sum, c.sum_sq, rule.alpha)
            raw.append((name, ch.id, effect))

    adjusted: list[float] = [float("nan")] * len(raw)
    for family in (
        [i for i, r in enumerate(raw) if r[0] == spec.primary_metric],
        [i for i, r in enumerate(raw) if r[0] != spec.primary_metric],
    ):
        for i, p in zip(
            family,
            adjust_pvalues([raw[i][2].p_value for i in family], rule.correction),
            strict=True,
        ):
            adjusted[i] = p

    out = []
    for (name, variant, e), p_adj in zip(raw, adjusted, strict=True):
        prob, loss = chance_to_beat(e.rel_lift, e.rel_se, spec.metric(name).higher_is_better)
        out.append(
            Comparison(
                metric=name,
                variant=variant,
                control=spec.control,
                estimate=e.estimate,
                rel_lift=e.rel_lift,
                ci_low=e.ci_low,
                ci_high=e.ci_high,
                rel_ci_low=e.rel_ci_low,
                rel_ci_high=e.rel_ci_high,
                p_value=e.p_value,
                p_value_adjusted=p_adj,
                prob_beat_control=prob,
                expected_loss=loss,
                method=e.method,
            )
        )
    return out


def _ratio_sums(s: GroupStats) -> tuple[int, float, float, float, float, float]:
    return s.n, s.sum, s.sum_sq, s.den_sum or 0.0, s.den_sum_sq or 0.0, s.cross_sum or 0.0


def _guardrails(spec: ExperimentSpec, comparisons: list[Comparison]) -> list[GuardrailResult]:
    """A challenger fails a guardrail when its CI lies entirely beyond the allowed worsening."""
    out = []
    for g in spec.guardrails:
        worse_is_up = not spec.metric(g.metric).higher_is_better
        for c in comparisons:
            if c.metric != g.metric:
                continue
            if worse_is_up:
                failed = c.rel_ci_low is not None and c.rel_ci_low > g.max_relative_increase
            else:
                failed = c.rel_ci_high is not None and c.rel_ci_high < -g.max_relative_increase
            out.append(
                GuardrailResult(
                    metric=g.metric,
                    variant=c.variant,
                    rel_lift=c.rel_lift,
                    rel_ci_low=c.rel_ci_low,
                    rel_ci_high=c.rel_ci_high,
                    max_relative_increase=g.max_relative_increase,
                    passed=not failed,
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


def analyze_files(
    spec: ExperimentSpec,
    events_path: str | Path,
    assignment_path: str | Path,
    quarantine_path: str | Path | None = None,
) -> tuple[MetricTable, ExperimentResults]:
    """Compute the spec's metrics from files in DuckDB and analyse them; return both."""
    table = compute_metrics(events_path, assignment_path, spec.metric_defs, quarantine_path)
    results = analyze(
        spec,
        table,
        source=str(events_path),
        fingerprint=data_fingerprint(events_path, assignment_path),
    )
    return table, results
