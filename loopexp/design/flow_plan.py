"""Planning a flow test: recipients per arm and days, given the entry rate, the window and the MDE.

A flow test reads the probability of converting within ``W`` days of entry, so it needs
recipients per arm *and* their windows closed: the days are the entry days plus ``W``.

Fixed horizon: the sample is the two-proportion one, read once when every window has closed.
Sequential (the default for flows): the test is read every day and ships at the first look whose
always-valid interval excludes 0, so a plan for the last look alone would understate the power
(by 7 pp at 80 %, bench/flow_calibration.md). The plan therefore computes the probability of
shipping at *any* daily look by the planned day, and searches the entry days that give the
wanted power. At each look it takes the Kaplan–Meier variance at ``W`` of each arm (Greenwood's
formula in its integral form, ∫ dΛ / at-risk, with conversions spread evenly over the window and
staggered entry censoring the recent entrants) and the z-process of the difference in information
time (independent increments; Jennison & Turnbull, *Group Sequential Methods*, 2000, ch. 11),
whose crossings of the confidence sequence's boundary are counted over simulated paths (fixed
seed: the same inputs give the same plan).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from loopexp.design.plan import sample_size_per_variant
from loopexp.design.spec import ExperimentSpec
from loopexp.stats.sequential import cs_halfwidth

#: Simulated paths of the z-process per power evaluation (MC SE of 80 % power: 0.3 pp).
PATHS = 20_000


class FlowPlan(NamedTuple):
    """How many recipients and days a flow test needs."""

    per_arm: int
    """Recipients per arm (the smallest arm's share sets the entry days)."""
    total: int
    """Entries needed into the split over all arms."""
    entry_days: float
    """Days of entries to reach ``total`` at ``entries_per_day``."""
    days: float
    """Entry days plus the window: when the last planned recipient's window closes."""
    window_days: float
    baseline: float
    mde_relative: float
    power: float
    alpha: float
    sequential: bool


def plan_flow(
    baseline: float,
    mde_relative: float,
    entries_per_day: float,
    window_days: float,
    alpha: float = 0.05,
    power: float = 0.8,
    weights: tuple[float, ...] = (1.0, 1.0),
    sequential: bool = True,
) -> FlowPlan:
    """Plan a flow test (see the module docstring); ``weights`` are the arms', control first."""
    if not entries_per_day > 0:
        raise ValueError(f"entries_per_day must be positive; got {entries_per_day}")
    if len(weights) < 2 or min(weights) <= 0:
        raise ValueError(f"need two or more positive arm weights; got {weights}")
    plan = sample_size_per_variant(
        baseline,
        mde_relative,
        alpha=alpha,
        power=power,
        n_challengers=len(weights) - 1,
        sequential=sequential,
    )
    smallest = min(weights) / sum(weights)
    entry_days = plan.per_variant / smallest / entries_per_day
    if sequential:
        alpha_each = alpha / (len(weights) - 1)
        rates = (baseline, baseline * (1 + mde_relative))
        arm_rate = entries_per_day * smallest

        def shortfall(days: float) -> float:
            return power - daily_look_power(rates, arm_rate, days, window_days, alpha_each, alpha)

        entry_days = _search_days(shortfall, entry_days)
    total = math.ceil(entry_days * entries_per_day)
    entry_days = total / entries_per_day
    plan = plan._replace(per_variant=math.ceil(total * smallest))
    return FlowPlan(
        plan.per_variant,
        total,
        entry_days,
        entry_days + window_days,
        window_days,
        baseline,
        mde_relative,
        power,
        alpha,
        sequential,
    )


def km_variance(
    rate: float, window: float, arm_per_day: float, entry_days: float, day: float
) -> float:
    """Variance of the Kaplan–Meier P(event by ``window``) of one arm at a look on ``day``.

    Entries at ``arm_per_day`` over ``entry_days``; events spread evenly over the window (hazard
    of F(t) = rate·t/W). Greenwood's variance as an integral: S(W)² ∫₀ᵂ dΛ(t) / at-risk(t), where
    at-risk(t) is the expected number entered at least ``t`` days before the look and still
    without the event. Infinite when nobody has been followed for the whole window.
    """
    t = np.linspace(0.0, window, 201)
    mid = (t[1:] + t[:-1]) / 2
    surv = 1.0 - rate * mid / window
    entered_early = arm_per_day * np.clip(np.minimum(day - mid, entry_days), 0.0, None)
    at_risk = entered_early * surv
    if at_risk[-1] <= 0:
        return math.inf
    d_lambda = (rate / window) / surv * np.diff(t)
    return float((1.0 - rate) ** 2 * np.sum(d_lambda / at_risk))


def daily_look_power(
    rates: tuple[float, float],
    arm_per_day: float,
    entry_days: float,
    window: float,
    alpha: float,
    design_alpha: float = 0.05,
    paths: int = PATHS,
) -> float:
    """Probability that the always-valid test ships the challenger at some daily look.

    Looks on days 1, 2, ... until every window of ``entry_days`` of entries has closed; the
    mixture tuned at the planned total (both arms), as a spec's ``planned_recipients_per_variant``
    sets it. See the module docstring for the model.
    """
    control, treated = rates
    spread = control * (1 - control) + treated * (1 - treated)
    tuning = 2.0 * arm_per_day * entry_days
    info, bound = [], []
    for day in np.arange(1.0, math.ceil(entry_days + window) + 1):
        var = km_variance(control, window, arm_per_day, entry_days, day)
        var += km_variance(treated, window, arm_per_day, entry_days, day)
        if not math.isfinite(var):
            continue
        info.append(1.0 / var)
        bound.append(cs_halfwidth(1.0, 2.0 * spread / var, alpha, tuning, design_alpha))
    if not info:
        return 0.0
    info_arr = np.array(info)
    rng = np.random.default_rng(20_26)
    steps = rng.standard_normal((paths, info_arr.size)) * np.sqrt(np.diff(info_arr, prepend=0.0))
    score = np.cumsum(steps, axis=1) + (treated - control) * info_arr
    z = score / np.sqrt(info_arr)
    return float(np.mean((z > np.array(bound)).any(axis=1)))


def _search_days(shortfall, start: float) -> float:
    """Smallest entry days (to 1 %) with ``shortfall(days) <= 0``, by bisection from ``start``."""
    low, high = start / 8, start
    while shortfall(high) > 0:
        low, high = high, high * 2
        if high > 3650:
            raise ValueError("the test would need more than ten years of entries; raise the MDE")
    while high - low > 0.01 * high:
        mid = (low + high) / 2
        if shortfall(mid) > 0:
            low = mid
        else:
            high = mid
    return high


def plan_flow_spec(
    spec: ExperimentSpec, baseline: float, entries_per_day: float, power: float = 0.8
) -> FlowPlan:
    """:func:`plan_flow` with the spec's window, MDE, alpha, arm weights and decision method."""
    if spec.flow is None:
        raise ValueError(f"spec {spec.name!r} has no flow: section; use plan_experiment")
    weights = [next(v.weight for v in spec.variants if v.id == spec.control)]
    weights += [v.weight for v in spec.challengers]
    return plan_flow(
        baseline,
        spec.decision.mde_relative,
        entries_per_day,
        spec.flow.conversion.window_days,
        alpha=spec.decision.alpha,
        power=power,
        weights=tuple(weights),
        sequential=spec.decision_method == "sequential",
    )


__all__ = ["FlowPlan", "plan_flow", "plan_flow_spec"]
