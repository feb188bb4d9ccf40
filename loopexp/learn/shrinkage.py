"""Winner's curse, corrected: empirical-Bayes shrinkage of a campaign's lifts, and the baseline.

A challenger that shipped was selected for looking best, so its observed lift (and the new
control's observed rate) overstates the truth. The campaign's own primary comparisons give a
normal prior of true log lifts (DerSimonian-Laird, :func:`empirical_bayes_prior`); each lift is
shrunk towards it (:func:`shrink`), and the next iteration is planned from the old control's rate
times the shrunk lift (:func:`planning_baseline`) rather than from the winner's observed rate.
Pure math on :class:`ExperimentResults`: the closed-loop report and ``loopexp run`` both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict
from scipy import stats as sps

from loopexp.analysis.results import Comparison, ExperimentResults, Status
from loopexp.stats.shrinkage import log_lift_se, shrink_log_lift


class Lift(BaseModel):
    """A relative lift with its interval (and the interval's level)."""

    model_config = ConfigDict(frozen=True)

    value: float | None
    low: float | None = None
    high: float | None = None
    level: float | None = None


def log_lift(
    lift: float | None, low: float | None, high: float | None, level: float | None
) -> tuple[float, float] | None:
    """(log ratio, its standard error) from a lift and its interval; None when not usable."""
    return log_lift_se(lift, low, high, level)


def empirical_bayes_prior(estimates: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Normal prior (mean, sd) of true log lifts from past estimates ``(y, se)``.

    DerSimonian-Laird method of moments (the random-effects estimator of meta-analysis):
    tau² = max(0, (Q - (k - 1)) / (Σw - Σw²/Σw)), w = 1/se². None with fewer than 3 estimates
    (too few to learn a spread from).
    """
    if len(estimates) < 3:
        return None
    w = [1 / se**2 for _, se in estimates]
    sw = sum(w)
    mean_fixed = sum(wi * y for wi, (y, _) in zip(w, estimates, strict=True)) / sw
    q = sum(wi * (y - mean_fixed) ** 2 for wi, (y, _) in zip(w, estimates, strict=True))
    tau2 = max(0.0, (q - (len(estimates) - 1)) / (sw - sum(wi * wi for wi in w) / sw))
    w_re = [1 / (se**2 + tau2) for _, se in estimates]
    mu = sum(wi * y for wi, (y, _) in zip(w_re, estimates, strict=True)) / sum(w_re)
    return float(mu), math.sqrt(tau2)


def shrink(y: float, se: float, prior: tuple[float, float], level: float = 0.95) -> Lift:
    """The posterior of one log lift under the normal prior, as a relative lift with interval."""
    value, low, high = shrink_log_lift(y, se, prior[0], prior[1], level)
    return Lift(value=value, low=low, high=high, level=level)


def cumulative_lift(lifts: Iterable[Lift]) -> Lift:
    """Product of successive randomised lifts (log ratios add; independent tests' variances too)."""
    total = var = 0.0
    for lift in lifts:
        ys = log_lift(lift.value, lift.low, lift.high, lift.level)
        if ys is None:
            continue
        total, var = total + ys[0], var + ys[1] ** 2
    z = float(sps.norm.ppf(0.975))
    sd = math.sqrt(var)
    return Lift(
        value=math.expm1(total),
        low=math.expm1(total - z * sd),
        high=math.expm1(total + z * sd),
        level=0.95,
    )


def primary_log_lifts(results: ExperimentResults) -> list[tuple[Comparison, tuple[float, float]]]:
    """(comparison, (log lift, se)) of each usable comparison on the iteration's primary metric.

    The prior's data: the closed-loop report and :func:`planning_baseline` both learn from these.
    """
    metric = results.decision.primary_metric
    found = []
    for c in results.comparisons:
        ys = log_lift(c.rel_lift, c.rel_ci_low, c.rel_ci_high, c.ci_level)
        if c.metric == metric and ys is not None:
            found.append((c, ys))
    return found


def planning_baseline(
    history: Sequence[ExperimentResults], earlier_lifts: Sequence[tuple[float, float]] = ()
) -> float | None:
    """The next iteration's baseline rate of the primary metric, corrected for winner's curse.

    ``history``: the campaign's analysed iterations, oldest first, the one just decided last.
    After a ship, the new control's observed rate was selected for looking best: the baseline
    is the old control's rate times (1 + the winner's lift shrunk under the prior learned from
    every primary comparison of the campaign) instead. None when there is nothing to correct
    (use the observed rate), including when too few comparisons exist to learn a prior's spread
    and the raw lift would be used. ``earlier_lifts``: more of the campaign's primary log lifts
    ``(y, se)`` for the prior, read from runs' digests instead of their results (issue 25).
    """
    if not history:
        return None
    last = history[-1]
    decision = last.decision
    if decision.status != Status.SHIP or not decision.winner:
        return None
    control = next((v for v in last.variants if v.is_control), None)
    value = control.metrics.get(decision.primary_metric) if control else None
    winner = next((cy for cy in primary_log_lifts(last) if cy[0].variant == decision.winner), None)
    if value is None or value.value is None or winner is None:
        return None
    prior = empirical_bayes_prior(
        [*earlier_lifts, *(ys for r in history for _, ys in primary_log_lifts(r))]
    )
    comparison, ys = winner
    lift = shrink(*ys, prior).value if prior else comparison.rel_lift
    return value.value * (1 + lift)


__all__ = [
    "Lift",
    "empirical_bayes_prior",
    "log_lift",
    "planning_baseline",
    "primary_log_lifts",
    "shrink",
]
