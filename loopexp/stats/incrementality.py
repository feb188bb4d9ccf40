"""Holdout incrementality: what mailing earned compared with not mailing at all.

The no-mail holdout is randomised like any arm, so each mailed arm — and all mailed arms pooled —
can be compared with it, provided the metric's denominator is *everyone assigned* (intent to
treat): conversions and revenue per assigned recipient. Opens and clicks do not exist for people
who were not mailed, and bounced or undelivered recipients must stay in the mailed arm's
denominator, or the comparison would no longer be randomised.

Each comparison uses the same tests and intervals as the A/B comparisons (score test with Mee /
Koopman intervals for rates, Welch / Fieller for means, or the always-valid versions), and turns
the per-recipient difference into totals: incremental conversions and incremental revenue, with
their intervals, ``difference × recipients in the mailed arm(s)`` — what the closed-loop report
needs for marketing's share of revenue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

from loopexp.stats.comparison import TwoSampleMethod, method_for
from loopexp.stats.effect import Effect
from loopexp.stats.multiplicity import adjust_pvalues, interval_alphas
from loopexp.stats.sequential import GaussianMethod

#: The id of the pooled comparison of all mailed arms against the holdout.
ALL_MAILED = "all_mailed"


class Sums(Protocol):
    """Sufficient statistics of one group on a per-assigned metric (as the engine's GroupStats)."""

    n: int
    sum: float
    sum_sq: float


class GroupSums(NamedTuple):
    """Plain sufficient statistics: recipients assigned, Σy, Σy²."""

    n: int
    sum: float
    sum_sq: float


class Incrementality(NamedTuple):
    """One mailed arm (or all of them) against the no-mail holdout on a per-assigned metric.

    Attributes:
        metric: the metric (denominator: everyone assigned).
        arm: the mailed variant, or :data:`ALL_MAILED`.
        n_arm: recipients assigned to the arm(s).
        n_holdout: recipients assigned to the holdout.
        effect: arm minus holdout per assigned recipient, with CI, relative lift and p-value.
        p_value_adjusted: p-value adjusted across the arms (pooled comparison excluded).
        incremental_total: ``effect.estimate × n_arm``: conversions (or revenue) the mailing added.
        incremental_ci_low: lower bound of that total.
        incremental_ci_high: upper bound of that total.
        ci_level: the level of the intervals (after the multiplicity adjustment).
    """

    metric: str
    arm: str
    n_arm: int
    n_holdout: int
    effect: Effect
    p_value_adjusted: float
    incremental_total: float
    incremental_ci_low: float
    incremental_ci_high: float
    ci_level: float


def holdout_method(
    arm: Sums,
    holdout: Sums,
    kind: Literal["proportion", "mean"],
    tuning_n: float | None = None,
    design_alpha: float = 0.05,
) -> TwoSampleMethod:
    """The test of arm against holdout: the A/B comparisons' method, or the always-valid one."""
    if min(arm.n, holdout.n) < 2:
        raise ValueError(
            f"a holdout comparison needs at least 2 recipients in each group; got arm n={arm.n}, "
            f"holdout n={holdout.n}. Set audience.holdout in the spec to keep a no-mail group."
        )
    if tuning_n is None:
        return method_for(kind, arm, holdout)
    return GaussianMethod.from_stats(kind, arm, holdout, tuning_n, design_alpha)


def _effect(m: TwoSampleMethod, alpha: float) -> Effect:
    statistic, p_value = m.test()
    ci = m.interval(alpha)
    return Effect(
        control_value=m.control_value,
        treatment_value=m.treatment_value,
        estimate=m.estimate,
        ci_low=ci.diff_low,
        ci_high=ci.diff_high,
        rel_lift=m.rel_lift,
        rel_ci_low=ci.rel_low,
        rel_ci_high=ci.rel_high,
        rel_se=m.relative_se(),
        p_value=p_value,
        statistic=statistic,
        method=m.description,
    )


def compare_to_holdout(
    arm: Sums,
    holdout: Sums,
    kind: Literal["proportion", "mean"],
    alpha: float = 0.05,
    tuning_n: float | None = None,
) -> Effect:
    """Arm minus holdout on a per-assigned metric; always-valid when ``tuning_n`` is given."""
    return _effect(holdout_method(arm, holdout, kind, tuning_n, alpha), alpha)


def holdout_comparisons(
    metric: str,
    kind: Literal["proportion", "mean"],
    groups: Mapping[str, Sums],
    holdout: str = "holdout",
    alpha: float = 0.05,
    correction: str = "holm",
    tuning_n: float | None = None,
    pooled: bool = True,
) -> list[Incrementality]:
    """Every mailed arm, and all of them pooled, against the holdout on one per-assigned metric.

    The arms form one multiplicity family (``correction``); each arm's intervals are at the level
    its adjusted test used (:func:`loopexp.stats.interval_alphas`), as for the A/B comparisons.
    The pooled comparison is a single pre-planned summary, at ``alpha``.

    Args:
        metric: name of the metric (for the records).
        kind: ``proportion`` (e.g. conversion per assigned) or ``mean`` (revenue per assigned).
        groups: sufficient statistics per group id, holdout included, denominators = assigned.
        holdout: the holdout's group id.
        alpha: interval and test level.
        correction: multiplicity correction across the mailed arms.
        tuning_n: always-valid intervals and p-values tuned at this total sample, when given.
        pooled: also compare all mailed arms pooled (when there are at least two).

    Returns:
        One record per mailed arm in ``groups`` order, then the pooled one.
    """
    if holdout not in groups:
        raise ValueError(
            f"no {holdout!r} group in {sorted(groups)}: incrementality needs a no-mail holdout "
            "(audience.holdout > 0 in the spec)"
        )
    base = groups[holdout]
    arms: list[tuple[str, Sums]] = [(g, s) for g, s in groups.items() if g != holdout]
    if pooled and len(arms) > 1:
        arms.append((ALL_MAILED, _pool([s for _, s in arms])))
    methods = [holdout_method(s, base, kind, tuning_n, alpha) for _, s in arms]
    p_values = [m.p_value() for m in methods]
    adjusted, levels = list(p_values), [alpha] * len(arms)
    family = [i for i, (g, _) in enumerate(arms) if g != ALL_MAILED]
    family_p = [p_values[i] for i in family]
    for i, p_adj, level in zip(
        family,
        adjust_pvalues(family_p, correction),
        interval_alphas(family_p, correction, alpha),
        strict=True,
    ):
        adjusted[i], levels[i] = p_adj, level
    out = []
    for (g, s), m, p_adj, level in zip(arms, methods, adjusted, levels, strict=True):
        e = _effect(m, level)
        out.append(
            Incrementality(
                metric=metric,
                arm=g,
                n_arm=int(s.n),
                n_holdout=int(base.n),
                effect=e,
                p_value_adjusted=float(p_adj),
                incremental_total=e.estimate * s.n,
                incremental_ci_low=e.ci_low * s.n,
                incremental_ci_high=e.ci_high * s.n,
                ci_level=1 - level,
            )
        )
    return out


def _pool(groups: Sequence[Sums]) -> GroupSums:
    return GroupSums(
        sum(g.n for g in groups), sum(g.sum for g in groups), sum(g.sum_sq for g in groups)
    )
