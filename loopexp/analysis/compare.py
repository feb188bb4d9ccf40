"""The comparisons of an analysis: every challenger against control on every metric.

Each comparison carries its test (fixed-horizon or always-valid, regression-adjusted when the spec
names covariates), its intervals at the level its adjusted test used, and its Bayesian summaries.
A comparison that cannot be made is reported as :class:`NotCompared`, never as "no difference".
"""

from __future__ import annotations

from collections.abc import Mapping

from loopexp.analysis.results import Comparison, NotCompared
from loopexp.design.spec import ExperimentSpec
from loopexp.metrics.definitions import MetricDef
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats, MetricTable
from loopexp.stats import adjust_pvalues, chance_to_beat, interval_alphas
from loopexp.stats.adjustment import Moments, adjusted_method
from loopexp.stats.bayes import best_and_loss, posteriors
from loopexp.stats.comparison import TwoSampleMethod, method_for
from loopexp.stats.sequential import GaussianMethod

#: Regression-adjustment inputs: per-arm moments of (metric, variant id) on the spec's covariates.
CovariateMoments = Mapping[tuple[str, str], Moments]

MIN_PER_ARM = 2
"""Fewest recipients per arm (in the metric's denominator) for a comparison to be made at all."""

#: One comparison before adjustment: (segment, metric, challenger id, its test).
_Raw = tuple[str, str, str, TwoSampleMethod]
#: Per (segment, metric, challenger): Bayesian (prob_best, expected_loss_abs), CI narrowing.
_Key = tuple[str, str, str]

_BAYES_METHOD = {
    "proportion": "prob_best, expected_loss_abs: beta-binomial with the spec's Beta prior "
    "(quadrature); "
    "prob_beat_control, expected_loss: Gaussian on the relative lift (flat prior)",
    "mean": "Gaussian posteriors (flat prior) of each arm's mean and of the relative lift",
    "ratio": "prob_beat_control, expected_loss: Gaussian on the relative lift (flat prior)",
}


def compare_all(
    spec: ExperimentSpec,
    table: MetricTable,
    segments: list[str],
    covariate_moments: CovariateMoments | None = None,
) -> tuple[dict[str, list[Comparison]], list[NotCompared]]:
    """Every challenger against control on every metric in ``segments``; adjusted per family.

    Families: the primary metric across challengers and segments (the decision's family, when
    ``segments`` is the whole audience), and every other (metric, challenger, segment) together.
    Each comparison's intervals are at the level its adjusted test used
    (:func:`loopexp.stats.interval_alphas`), so they exclude 0 exactly when the adjusted p-value
    is below alpha. Comparisons that cannot be made are returned as :class:`NotCompared`.
    """
    raw: list[_Raw] = []
    missing: list[NotCompared] = []
    bayes: dict[_Key, tuple[float, float]] = {}
    narrowing: dict[_Key, float] = {}
    for segment in segments:
        for name in spec.all_metrics:
            _compare_metric(
                spec, table, segment, name, covariate_moments or {}, raw, missing, bayes, narrowing
            )
    p_values = [m.p_value() for *_, m in raw]
    adjusted, levels, sizes = _adjust(spec, raw, p_values)
    out: dict[str, list[Comparison]] = {seg: [] for seg in segments}
    for r, p, p_adj, level, size in zip(raw, p_values, adjusted, levels, sizes, strict=True):
        out[r[0]].append(_comparison(spec, table, r, p, p_adj, level, size, bayes, narrowing))
    return out, missing


def _compare_metric(
    spec: ExperimentSpec,
    table: MetricTable,
    segment: str,
    name: str,
    moments: CovariateMoments,
    raw: list[_Raw],
    missing: list[NotCompared],
    bayes: dict[_Key, tuple[float, float]],
    narrowing: dict[_Key, float],
) -> None:
    """The tests of every challenger on one metric in one segment.

    Each is appended to ``raw`` (or, when it cannot be made, to ``missing``); the Bayesian
    summaries of the arms that can be compared go to ``bayes``.
    """
    metric = spec.metric(name)
    arms: dict[str, GroupStats] = {}
    for v in spec.variants:
        try:
            arms[v.id] = table.get(name, v.id, segment)
        except KeyError:
            continue
    control = arms.get(spec.control)
    usable = [spec.control] if control is not None and control.n >= MIN_PER_ARM else []
    for ch in spec.challengers:
        t = arms.get(ch.id)
        reason = why_not_compared(metric, ch.id, t, spec.control, control)
        if reason:
            missing.append(NotCompared(metric=name, variant=ch.id, segment=segment, reason=reason))
            continue
        method = two_sample_method(spec, metric.kind, t, control)
        if (
            segment == ALL_SEGMENTS
            and spec.covariates
            and (name, ch.id) in moments
            and (name, spec.control) in moments
        ):
            method, narrowing[(segment, name, ch.id)] = adjusted_method(
                moments[(name, ch.id)],
                moments[(name, spec.control)],
                spec.sequential_tuning_n if spec.decision_method == "sequential" else None,
                spec.decision.alpha,
            )
        raw.append((segment, name, ch.id, method))
        usable.append(ch.id)
    # (ratio metrics: the Gaussian view on the relative lift only, no per-arm posteriors)
    if metric.kind != "ratio" and len(usable) > 1 and usable[0] == spec.control:
        bayes.update(_bayes(spec, metric, segment, [arms[u] for u in usable], usable))


def _adjust(
    spec: ExperimentSpec, raw: list[_Raw], p_values: list[float]
) -> tuple[list[float], list[float], list[int]]:
    """Adjusted p-values, interval alphas and family sizes, per family (primary, the rest)."""
    rule = spec.decision
    adjusted = [float("nan")] * len(raw)
    levels = [rule.alpha] * len(raw)
    sizes = [0] * len(raw)
    for family in (
        [i for i, r in enumerate(raw) if r[1] == spec.primary_metric],
        [i for i, r in enumerate(raw) if r[1] != spec.primary_metric],
    ):
        ps = [p_values[i] for i in family]
        for i, p_adj, level in zip(
            family,
            adjust_pvalues(ps, rule.correction),
            interval_alphas(ps, rule.correction, rule.alpha),
            strict=True,
        ):
            adjusted[i], levels[i], sizes[i] = p_adj, level, len(family)
    return adjusted, levels, sizes


def _comparison(
    spec: ExperimentSpec,
    table: MetricTable,
    raw: _Raw,
    p: float,
    p_adj: float,
    level: float,
    size: int,
    bayes: dict[_Key, tuple[float, float]],
    narrowing: dict[_Key, float],
) -> Comparison:
    """One comparison as reported: intervals at the adjusted level, Bayesian summaries."""
    segment, name, variant, m = raw
    ci = m.interval(level)
    lift, rel_se = m.rel_lift, m.relative_se()
    prob, loss = chance_to_beat(lift, rel_se, spec.metric(name).higher_is_better)
    best, loss_abs = bayes.get((segment, name, variant), (None, None))
    return Comparison(
        metric=name,
        variant=variant,
        control=spec.control,
        estimate=m.estimate,
        rel_lift=lift,
        ci_low=ci.diff_low,
        ci_high=ci.diff_high,
        rel_ci_low=ci.rel_low,
        rel_ci_high=ci.rel_high,
        p_value=p,
        p_value_adjusted=p_adj,
        prob_beat_control=prob,
        expected_loss=loss,
        method=_method(m, name, table, spec),
        ci_level=1 - level,
        family_size=size,
        prob_best=best,
        expected_loss_abs=loss_abs,
        bayes_method=_BAYES_METHOD[spec.metric(name).kind],
        covariates=(list(spec.covariates) if (segment, name, variant) in narrowing else None),
        ci_narrowing=narrowing.get((segment, name, variant)),
    )


def two_sample_method(
    spec: ExperimentSpec, kind: str, t: GroupStats, c: GroupStats
) -> TwoSampleMethod:
    """The spec's test for one comparison: fixed-horizon (i13's methods) or always-valid."""
    if spec.decision_method == "sequential":
        return GaussianMethod.from_stats(kind, t, c, spec.sequential_tuning_n, spec.decision.alpha)
    return method_for(kind, t, c)


def why_not_compared(
    metric: MetricDef, variant: str, t: GroupStats | None, control_id: str, c: GroupStats | None
) -> str | None:
    """Why a challenger cannot be compared with the control on ``metric``; None when it can."""
    population = f"{metric.denominator} recipients"
    for arm, stats in ((variant, t), (control_id, c)):
        if stats is None:
            return f"no statistics for arm {arm!r} on {metric.name}: it is missing from the data"
        if stats.n < MIN_PER_ARM:
            return (
                f"arm {arm!r} has {stats.n} {population} on {metric.name} (at least "
                f"{MIN_PER_ARM} per arm are needed): was its send made, and delivered?"
            )
        if metric.kind == "ratio" and not stats.den_sum:
            return (
                f"arm {arm!r} has a zero denominator sum on the ratio metric {metric.name}: "
                "the ratio is undefined there"
            )
    return None


def _method(m: TwoSampleMethod, name: str, table: MetricTable, spec: ExperimentSpec) -> str:
    cap = getattr(table, "caps", {}).get(name)
    if cap is None:
        return m.description
    return (
        f"{m.description}; per-recipient values capped at {cap:.6g} (the "
        f"{spec.decision.cap_percentile:.0%} percentile of non-zero values, pooled over arms)"
    )


def _bayes(
    spec: ExperimentSpec, metric: MetricDef, segment: str, arms: list[GroupStats], ids: list[str]
) -> dict[_Key, tuple[float, float]]:
    prior = (spec.decision.prior.a, spec.decision.prior.b)
    dists = posteriors(metric.kind, [(s.n, s.sum, s.sum_sq) for s in arms], prior)
    best, loss = best_and_loss(dists, metric.higher_is_better, control=0)
    return {
        (segment, metric.name, vid): (float(best[j]), float(loss[j]))
        for j, vid in enumerate(ids)
        if j > 0
    }
