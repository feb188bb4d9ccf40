"""The record every two-sample comparison returns, and the delta-method relative lift they share."""

from __future__ import annotations

import math
from typing import NamedTuple

from scipy import stats as sps


class Effect(NamedTuple):
    """Treatment-versus-control effect of one metric.

    Attributes:
        control_value: control mean (rate, or mean per recipient).
        treatment_value: treatment mean.
        estimate: absolute difference, treatment minus control.
        ci_low: lower bound of the ``1 - alpha`` CI of the absolute difference.
        ci_high: upper bound of that CI.
        rel_lift: relative lift, treatment / control - 1 (NaN when the control mean is 0).
        rel_ci_low: lower bound of the relative-lift CI (delta method, symmetric).
        rel_ci_high: upper bound of the relative-lift CI.
        rel_se: standard error of the relative lift (delta method).
        p_value: two-sided p-value of no difference.
        statistic: the test statistic (z or Welch t).
        method: the test and interval used, in words.
    """

    control_value: float
    treatment_value: float
    estimate: float
    ci_low: float
    ci_high: float
    rel_lift: float
    rel_ci_low: float
    rel_ci_high: float
    rel_se: float
    p_value: float
    statistic: float
    method: str


def relative_lift(
    mean_t: float,
    var_t: float,
    n_t: int,
    mean_c: float,
    var_c: float,
    n_c: int,
    alpha: float,
    df: float | None = None,
) -> tuple[float, float, float, float]:
    """Relative lift ``mean_t / mean_c - 1`` with its delta-method SE and symmetric CI.

    Var(m_t / m_c) ≈ v_t / (n_t m_c²) + m_t² v_c / (n_c m_c⁴)  (first-order Taylor expansion, as in
    GrowthBook's gbstats). The CI uses the normal quantile, or Student's t with ``df`` degrees of
    freedom when given (Welch, for means). Returns ``(lift, se, ci_low, ci_high)``; NaNs when the
    control mean is 0.
    """
    if mean_c == 0:
        nan = float("nan")
        return nan, nan, nan, nan
    variance = var_t / (n_t * mean_c**2) + mean_t**2 * var_c / (n_c * mean_c**4)
    se = math.sqrt(variance)
    lift = mean_t / mean_c - 1
    z = sps.norm.ppf(1 - alpha / 2) if df is None else sps.t.ppf(1 - alpha / 2, df)
    return lift, se, lift - z * se, lift + z * se
