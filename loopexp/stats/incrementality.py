"""Holdout incrementality: what mailing earned compared with not mailing at all.

The no-mail holdout is randomised like any arm, so each mailed arm — and all mailed arms pooled —
can be compared with it, provided the metric's denominator is *everyone assigned* (intent to
treat): conversions and revenue per assigned recipient. Opens and clicks do not exist for people
who were not mailed, and bounced or undelivered recipients must stay in the mailed arm's
denominator, or the comparison would no longer be randomised.

Each comparison uses the same tests and intervals as the A/B comparisons (pooled z-test and Wald
interval for rates, Welch for means, or the always-valid versions), and turns the per-recipient
difference into totals: incremental conversions and incremental revenue, with their intervals,
``difference × recipients in the mailed arm(s)`` — what the closed-loop report needs for marketing's
share of revenue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

from loopexp.stats.effect import Effect
from loopexp.stats.mean import compare_means
from loopexp.stats.multiplicity import adjust_pvalues
from loopexp.stats.proportion import compare_proportions
from loopexp.stats.sequential import sequential_means, sequential_proportions

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


def compare_to_holdout(
    arm: Sums,
    holdout: Sums,
    kind: Literal["proportion", "mean"],
    alpha: float = 0.05,
    tuning_n: float | None = None,
) -> Effect:
    """Arm minus holdout on a per-assigned metric; always-valid when ``tuning_n`` is given."""
    if min(arm.n, holdout.n) < 2:
        raise ValueError(
            f"a holdout comparison needs at least 2 recipients in each group; got arm n={arm.n}, "
            f"holdout n={holdout.n}. Set audience.holdout in the spec to keep a no-mail group."
        )
    if kind == "proportion":
        if tuning_n is None:
            return compare_proportions(arm.sum, arm.n, holdout.sum, holdout.n, alpha)
        return sequential_proportions(arm.sum, arm.n, holdout.sum, holdout.n, alpha, tuning_n)
    args = (arm.n, arm.sum, arm.sum_sq, holdout.n, holdout.sum, holdout.sum_sq, alpha)
    if tuning_n is None:
        return compare_means(*args)
    return sequential_means(*args, tuning_n)


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

    Args:
        metric: name of the metric (for the records).
        kind: ``proportion`` (e.g. conversion per assigned) or ``mean`` (revenue per assigned).
        groups: sufficient statistics per group id, holdout included, denominators = assigned.
        holdout: the holdout's group id.
        alpha: interval and test level.
        correction: multiplicity correction across the mailed arms (as for the A/B comparisons).
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
    effects = [compare_to_holdout(s, base, kind, alpha, tuning_n) for _, s in arms]
    family = [i for i, (g, _) in enumerate(arms) if g != ALL_MAILED]
    adjusted = [e.p_value for e in effects]
    family_adjusted = adjust_pvalues([effects[i].p_value for i in family], correction)
    for i, p in zip(family, family_adjusted, strict=True):
        adjusted[i] = p
    return [
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
        )
        for (g, s), e, p_adj in zip(arms, effects, adjusted, strict=True)
    ]


def _pool(groups: Sequence[Sums]) -> GroupSums:
    return GroupSums(
        sum(g.n for g in groups), sum(g.sum for g in groups), sum(g.sum_sq for g in groups)
    )
