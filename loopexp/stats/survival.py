"""Censoring-aware conversion within a window: Kaplan–Meier per arm, and their difference.

A flow test enrols people over time and judges each on an event within ``W`` days of entry. At a
look, someone who entered two days ago has had two days, not ``W``: counting them as a
non-converter ("conversions so far") biases every arm down, and most the arm that converts later
(a longer wait before the reminder), although it may convert as much by ``W``. Kaplan–Meier treats
them as censored at their follow-up instead, so ``1 - S(W)`` estimates the probability of
converting within ``W`` from everyone's information (statsmodels' ``SurvfuncRight``, with
Greenwood's variance).

Two arms are independent samples, so the difference of their KM probabilities has variance
``se_t² + se_c²``; the relative lift gets the delta method. Read at every look (entries
accumulate), the interval is the always-valid confidence sequence of
:mod:`loopexp.stats.sequential`, indexed by the information the estimates carry: the number of
fully-followed recipients that would give the same standard error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

from loopexp.stats.effect import Effect
from loopexp.stats.sequential import always_valid_pvalue, cs_halfwidth


class WindowRate(NamedTuple):
    """Probability of the event within the window for one arm, with its standard error.

    ``value`` is NaN when nobody in the arm has been followed for the whole window yet: then
    there is no estimate (not a zero).
    """

    value: float
    se: float
    n: int
    events: int
    """Events seen within the window so far."""
    matured: int
    """Recipients followed for the whole window (their outcome is known)."""


def window_times(
    time_to_event: np.ndarray, followup: np.ndarray, window: float
) -> tuple[np.ndarray, np.ndarray]:
    """(duration, event flag) for Kaplan–Meier from time to event (NaN: none) and follow-up.

    An event counts when it came within both the follow-up and the window; everyone else is
    censored at the smaller of the two.
    """
    t = np.asarray(time_to_event, dtype=float)
    f = np.asarray(followup, dtype=float)
    horizon = np.minimum(f, window)
    event = np.isfinite(t) & (t <= horizon)
    return np.where(event, t, horizon), event


def km_window_rate(duration: np.ndarray, event: np.ndarray, window: float) -> WindowRate:
    """Kaplan–Meier probability of the event by ``window`` (``1 - S(window)``), Greenwood SE."""
    from statsmodels.duration.survfunc import SurvfuncRight  # noqa: PLC0415 (~0.5 s import)

    duration = np.asarray(duration, dtype=float)
    event = np.asarray(event, dtype=bool)
    n = int(duration.size)
    events = int(event.sum())
    matured = int(np.sum(duration >= window))
    if matured == 0:
        return WindowRate(math.nan, math.nan, n, events, 0)
    if events == 0:
        return WindowRate(0.0, 0.0, n, 0, matured)
    sf = SurvfuncRight(duration, event.astype(float))
    idx = int(np.searchsorted(sf.surv_times, window, side="right")) - 1
    surv = float(sf.surv_prob[idx]) if idx >= 0 else 1.0
    se = float(sf.surv_prob_se[idx]) if idx >= 0 else 0.0
    return WindowRate(1.0 - surv, se, n, events, matured)


def matured_rate(
    time_to_event: np.ndarray, followup: np.ndarray, window: float
) -> tuple[float, int, int]:
    """(rate, events, n) among recipients followed for the whole window (the matured cohort)."""
    t = np.asarray(time_to_event, dtype=float)
    matured = np.asarray(followup, dtype=float) >= window
    n = int(matured.sum())
    events = int(np.sum(matured & np.isfinite(t) & (t <= window)))
    return (events / n if n else math.nan), events, n


def information_n(treatment: WindowRate, control: WindowRate) -> float:
    """Fully-followed recipients (both arms) that would give the difference's standard error.

    With complete follow-up and n per arm, se² = (p_t q_t + p_c q_c) / n, so the information is
    ``2 (p_t q_t + p_c q_c) / se²``: the sample size the confidence sequence is indexed by.
    """
    var = treatment.se**2 + control.se**2
    spread = sum(r.value * (1 - r.value) for r in (treatment, control))
    if not var > 0 or not spread > 0:
        return 0.0
    return 2.0 * spread / var


def window_difference(
    treatment: WindowRate,
    control: WindowRate,
    alpha: float = 0.05,
    sequential: bool = True,
    tuning_n: float = 5000.0,
    design_alpha: float | None = None,
) -> Effect:
    """Difference of two window rates: estimate, interval at ``1 - alpha``, p-value, relative lift.

    ``sequential``: the always-valid confidence sequence and p-value (read at any number of
    looks); else the fixed-horizon Wald interval. An undefined rate or a zero standard error
    gives an unbounded interval and a p-value of 1: no evidence either way.
    """
    design_alpha = alpha if design_alpha is None else design_alpha
    nan = math.nan
    pt, pc = treatment.value, control.value
    se = math.sqrt(treatment.se**2 + control.se**2)
    method = (
        "Kaplan–Meier P(event within window) per arm, difference with Greenwood variances; "
        + (f"always-valid confidence sequence (n*={tuning_n:g})" if sequential else "Wald")
    )
    if not (math.isfinite(pt) and math.isfinite(pc) and se > 0):
        inf = math.inf
        diff = pt - pc if math.isfinite(pt) and math.isfinite(pc) else nan
        return Effect(pc, pt, diff, -inf, inf, nan, -inf, inf, nan, 1.0, 0.0, method)
    diff = pt - pc
    rel_se = math.sqrt(treatment.se**2 / pc**2 + pt**2 * control.se**2 / pc**4) if pc else nan
    lift = pt / pc - 1 if pc else nan
    if sequential:
        n_info = information_n(treatment, control)
        half = cs_halfwidth(se, n_info, alpha, tuning_n, design_alpha)
        rel_half = cs_halfwidth(rel_se, n_info, alpha, tuning_n, design_alpha) if pc else nan
        p_value = always_valid_pvalue(diff, se, n_info, tuning_n, design_alpha)
    else:
        z = float(sps.norm.ppf(1 - alpha / 2))
        half, rel_half = z * se, z * rel_se
        p_value = float(2 * sps.norm.sf(abs(diff) / se))
    return Effect(
        control_value=pc,
        treatment_value=pt,
        estimate=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        rel_lift=lift,
        rel_ci_low=lift - rel_half,
        rel_ci_high=lift + rel_half,
        rel_se=rel_se,
        p_value=p_value,
        statistic=diff / se,
        method=method,
    )


__all__ = [
    "WindowRate",
    "information_n",
    "km_window_rate",
    "matured_rate",
    "window_difference",
    "window_times",
]
