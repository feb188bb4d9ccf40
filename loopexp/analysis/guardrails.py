"""Guardrails: each challenger tested against each guardrail's margin, or "no data".

Split from :mod:`loopexp.analysis.analyze` (module size); the decision reads these results.
"""

from __future__ import annotations

from loopexp.analysis.compare import two_sample_method, why_not_compared
from loopexp.analysis.results import GuardrailResult
from loopexp.design.spec import ExperimentSpec
from loopexp.metrics.definitions import MetricDef
from loopexp.metrics.engine import MetricTable


def guardrail_results(spec: ExperimentSpec, table: MetricTable) -> list[GuardrailResult]:
    """One-sided test of each challenger against each guardrail's margin, at level alpha / 2.

    ``harm``: veto when the data show a worsening beyond the margin (H0: not worse by more than
    the margin). ``non_inferiority``: pass only when the data show the challenger is not worse by
    more than the margin (H0: worse by at least the margin). Both are one-sided at alpha / 2, the
    regulatory convention for non-inferiority (ICH E9), so that the decision reads the same
    two-sided ``1 - alpha`` interval the spec's level names: a veto (harm) or a pass
    (non-inferiority) exactly when that interval lies wholly beyond / within the margin. No
    multiplicity adjustment: each challenger must pass every guardrail (an intersection-union
    test).
    """
    alpha = spec.decision.alpha
    out = []
    for g in spec.guardrails:
        metric = spec.metric(g.metric)
        worse_is_up = not metric.higher_is_better
        bad_ratio = 1 + g.max_relative_increase if worse_is_up else 1 - g.max_relative_increase
        for ch in spec.challengers:
            missing = _guardrail_missing(spec, table, metric, ch.id)
            if missing is not None:
                out.append(
                    missing.model_copy(
                        update={"max_relative_increase": g.max_relative_increase, "mode": g.mode}
                    )
                )
                continue
            t = table.get(g.metric, ch.id)
            c = table.get(g.metric, spec.control)
            m = two_sample_method(spec, metric.kind, t, c)
            ci = m.interval(alpha)
            if g.mode == "harm":
                p = m.one_sided_p(bad_ratio, "greater" if worse_is_up else "less")
                failed = p < alpha / 2
            else:
                p = m.one_sided_p(bad_ratio, "less" if worse_is_up else "greater")
                failed = not p < alpha / 2
            out.append(
                GuardrailResult(
                    metric=g.metric,
                    variant=ch.id,
                    rel_lift=m.rel_lift,
                    rel_ci_low=ci.rel_low,
                    rel_ci_high=ci.rel_high,
                    max_relative_increase=g.max_relative_increase,
                    passed=not failed,
                    mode=g.mode,
                    p_value=p,
                    ci_level=1 - alpha,
                )
            )
    return out


def _guardrail_missing(
    spec: ExperimentSpec, table: MetricTable, metric: MetricDef, variant: str
) -> GuardrailResult | None:
    """A no-data result when guardrail ``metric`` cannot judge ``variant``, else None.

    No event of the metric in any arm (e.g. an export without unsubscribe events) is no evidence
    that a challenger is harmless: it must not pass as if it were.
    """
    stats = {}
    for v in spec.variants:
        try:
            stats[v.id] = table.get(metric.name, v.id)
        except KeyError:
            stats[v.id] = None
    why = why_not_compared(metric, variant, stats[variant], spec.control, stats[spec.control])
    if why is None and all(s is not None and s.sum == 0 for s in stats.values()):
        events = ", ".join(metric.numerator.events or [metric.numerator.column or "?"])
        why = (
            f"no {events} event in any arm: the data may lack that event type (check the "
            "export), so it cannot show the challenger is harmless"
        )
    if why is None:
        return None
    return GuardrailResult(
        metric=metric.name,
        variant=variant,
        rel_lift=None,
        rel_ci_low=None,
        rel_ci_high=None,
        max_relative_increase=0.0,
        passed=False,
        no_data=True,
        note=why,
    )
