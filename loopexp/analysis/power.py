"""A read far below the planned sample: what this list can detect, and the shrunk lift.

A newcomer's first test shipped +52.7 % at 1,963 recipients per variant where the plan needed
47,805: at that size only huge lifts reach significance, so a lift that does is mostly luck
(the winner's curse). The decision then says so: the smallest lift this list can detect, and the
best challenger's lift shrunk towards 0 beside the raw one. The prior of true log lifts is
N(0, log(1 + MDE)²): the spec's MDE is the order of lift the team expects to find; the campaign's
own history (:mod:`loopexp.learn.shrinkage`) is not available to a first test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loopexp.analysis.results import Comparison
from loopexp.design.plan import mde_at, sample_size_per_variant
from loopexp.design.spec import ExperimentSpec
from loopexp.stats.shrinkage import log_lift_se, shrink_log_lift

#: A read below this share of the planned sample per variant is "far below the plan".
FAR_BELOW = 0.5


@dataclass(frozen=True)
class PowerCheck:
    """The underpowered verdict of one read (empty ``reasons`` when it is not underpowered)."""

    reasons: list[str]
    detectable_rel_lift: float | None = None
    shrunk_rel_lift: float | None = None


def _control_rate(c: Comparison) -> float | None:
    if c.rel_lift is None or not math.isfinite(c.rel_lift) or c.rel_lift == 0:
        return None
    rate = c.estimate / c.rel_lift  # estimate = treated - control, rel_lift = estimate / control
    return rate if 0 < rate < 1 else None


def power_check(spec: ExperimentSpec, best: Comparison | None, reached: int) -> PowerCheck:
    """Is this read far below the planned sample? Say what it can detect and shrink the lift.

    The plan is ``planned_recipients_per_variant``, else the sample the spec's MDE needs at the
    observed control rate (what ``loopexp plan`` would say). Proportion metrics only.
    """
    rule = spec.decision
    if best is None or spec.metric(spec.primary_metric).kind != "proportion":
        return PowerCheck([])
    control = _control_rate(best)
    if control is None or reached <= 0:
        return PowerCheck([])
    arms = max(1, len(spec.challengers))
    planned = spec.planned_recipients_per_variant
    source = "planned_recipients_per_variant"
    if planned is None:
        planned = sample_size_per_variant(
            control, rule.mde_relative, rule.alpha, rule.power, arms, rule.expected_delivery_rate
        ).per_variant
        source = f"`loopexp plan` at the observed control rate {control:.2%}"
    if reached >= FAR_BELOW * planned:
        return PowerCheck([])
    delivered = max(2, int(reached * rule.expected_delivery_rate))
    detectable = mde_at(control, delivered, rule.alpha / arms, rule.power)
    can = f"+{detectable:.0%}" if detectable is not None else "no lift at all"
    reason = (
        f"Underpowered: {reached:,} recipients per variant, {reached / planned:.0%} of the "
        f"{planned:,} needed to detect +{rule.mde_relative:.0%} ({source}): this list can detect "
        f"{can} on {spec.primary_metric} (power {rule.power:.0%})."
    )
    shrunk = None
    est = log_lift_se(best.rel_lift, best.rel_ci_low, best.rel_ci_high, best.ci_level)
    if est is not None:
        tau = math.log1p(rule.mde_relative)
        shrunk, _, _ = shrink_log_lift(est[0], est[1], 0.0, tau, best.ci_level or 0.95)
        reason += (
            f" A lift found at this size is mostly luck (the winner's curse): {best.variant} "
            f"{best.rel_lift:+.1%} raw, {shrunk:+.1%} shrunk (prior: true lifts of the order of "
            f"the MDE). Plan the next send with `loopexp plan --write`."
        )
    return PowerCheck([reason], detectable, shrunk)
