"""Two means: Welch's t statistic, its test and the intervals that invert it (Fieller for a ratio).

As for proportions (:mod:`loopexp.stats.score`), the decision's interval and its test come from one
statistic, so a relative interval excludes 0 exactly when the test rejects:

    t(R) = (m_t - R m_c) / sqrt(s²_t/n_t + R² s²_c/n_c)

At R = 1 this is Welch's t (R ``t.test`` default); the set of R it keeps at level alpha is
Fieller's (1954) interval for the ratio of means, and δ ↦ (m_t - m_c - δ)/se gives the
Welch-Satterthwaite interval of the difference. Both use the Student t quantile with the Welch
degrees of freedom of the test (df at R = 1), which is what makes them agree with it exactly.

The delta-method interval used before is symmetric; with skewed revenue it is too narrow on the
side where the control mean is small, which is how a significant lift came with an interval
containing 0. Fieller's interval can be unbounded: when the control mean is not itself
distinguishable from 0 the ratio is not estimable, and the bounds say so (±inf).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from scipy import stats as sps


class WelchStats(NamedTuple):
    """Means, squared standard errors and Welch degrees of freedom of two groups."""

    mean_t: float
    mean_c: float
    se2_t: float
    se2_c: float
    df: float


def welch_stats(
    n_t: int, sum_t: float, sum_sq_t: float, n_c: int, sum_c: float, sum_sq_c: float
) -> WelchStats:
    """Means, squared SEs and Welch-Satterthwaite df from sufficient statistics."""
    if min(n_t, n_c) < 2:
        raise ValueError(f"each group needs at least 2 recipients; got n_t={n_t}, n_c={n_c}")
    m_t, m_c = sum_t / n_t, sum_c / n_c
    v_t = max(sum_sq_t - n_t * m_t * m_t, 0.0) / (n_t - 1)
    v_c = max(sum_sq_c - n_c * m_c * m_c, 0.0) / (n_c - 1)
    se2_t, se2_c = v_t / n_t, v_c / n_c
    denom = se2_t**2 / (n_t - 1) + se2_c**2 / (n_c - 1)
    df = (se2_t + se2_c) ** 2 / denom if denom > 0 else math.inf
    return WelchStats(m_t, m_c, se2_t, se2_c, df)


def t_ratio(w: WelchStats, ratio: float = 1.0) -> float:
    """Statistic of H0: mean_t / mean_c = ratio (positive when the treatment is above it)."""
    num = w.mean_t - ratio * w.mean_c
    var = w.se2_t + ratio * ratio * w.se2_c
    if var <= 0:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def welch_test(w: WelchStats) -> tuple[float, float]:
    """``(t, two-sided p)`` of equal means; 0 and 1 when both groups have no variance."""
    t = t_ratio(w, 1.0)
    if w.se2_t + w.se2_c <= 0:
        return 0.0, 1.0
    return t, float(2 * sps.t.sf(abs(t), w.df))


def quantile(w: WelchStats, alpha: float) -> float:
    """Two-sided ``1 - alpha`` quantile of the test's reference distribution."""
    return float(sps.t.ppf(1 - alpha / 2, w.df))


def diff_interval(w: WelchStats, alpha: float = 0.05) -> tuple[float, float]:
    """Welch-Satterthwaite ``1 - alpha`` interval of mean_t - mean_c."""
    diff = w.mean_t - w.mean_c
    half = quantile(w, alpha) * math.sqrt(w.se2_t + w.se2_c)
    return diff - half, diff + half


def ratio_interval(w: WelchStats, alpha: float = 0.05) -> tuple[float, float]:
    """Fieller ``1 - alpha`` interval of mean_t / mean_c: every ratio R with |t(R)| <= q.

    Solves (m_t - R m_c)² = q² (s²_t + R² s²_c). When the control mean is not significantly
    different from 0 (m_c² <= q² s²_c) the set is unbounded: either the whole line, or two rays, of
    which the one containing the estimate is returned (so 1 is excluded exactly when the test
    rejects). A control of exactly 0 with no variance and a significant treatment gives
    (inf, inf): every ratio is rejected, the lift is unbounded.
    """
    q = quantile(w, alpha)
    q2 = q * q
    a = w.mean_c**2 - q2 * w.se2_c
    b = -2 * w.mean_t * w.mean_c
    c = w.mean_t**2 - q2 * w.se2_t
    disc = b * b - 4 * a * c
    if a > 0:
        root = math.sqrt(max(disc, 0.0))
        return (-b - root) / (2 * a), (-b + root) / (2 * a)
    if a == 0:  # linear: b R + c <= 0
        if b == 0:  # control mean and SE both 0: t(R) is the same for every R
            if c <= 0:
                return -math.inf, math.inf
            return (math.inf, math.inf) if w.mean_t > 0 else (-math.inf, -math.inf)
        return (-math.inf, -c / b) if b > 0 else (-c / b, math.inf)
    if disc <= 0:
        return -math.inf, math.inf
    root = math.sqrt(disc)
    r1, r2 = sorted(((-b - root) / (2 * a), (-b + root) / (2 * a)))
    estimate = w.mean_t / w.mean_c if w.mean_c else math.copysign(math.inf, w.mean_t)
    return (r2, math.inf) if estimate >= r2 else (-math.inf, r1)


def one_sided_p_ratio(w: WelchStats, ratio: float, alternative: str) -> float:
    """One-sided p of H0 on mean_t / mean_c = ratio; ``alternative`` is "less" or "greater"."""
    t = t_ratio(w, ratio)
    return float(sps.t.cdf(t, w.df) if alternative == "less" else sps.t.sf(t, w.df))
