"""Mean comparison from sufficient statistics: Welch t-test and delta-method relative lift.

Kept as a public function (pinned by the reference tests against gbstats); the analysis reads
:class:`loopexp.stats.comparison.WelchFieller`, whose Fieller ratio interval agrees with the test.
"""

from __future__ import annotations

import math

from scipy import stats as sps

from loopexp.stats.effect import Effect, relative_lift


def mean_and_variance(n: int, total: float, total_sq: float) -> tuple[float, float]:
    """Mean and unbiased sample variance from ``n``, sum and sum of squares."""
    mean = total / n
    variance = max(total_sq - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, variance


def compare_means(
    n_t: int,
    sum_t: float,
    sum_sq_t: float,
    n_c: int,
    sum_c: float,
    sum_sq_c: float,
    alpha: float = 0.05,
) -> Effect:
    """Welch's t-test (R ``t.test`` default) of treatment minus control, from sums."""
    if min(n_t, n_c) < 2:
        raise ValueError(f"each group needs at least 2 recipients; got n_t={n_t}, n_c={n_c}")
    m_t, v_t = mean_and_variance(n_t, sum_t, sum_sq_t)
    m_c, v_c = mean_and_variance(n_c, sum_c, sum_sq_c)
    se2_t, se2_c = v_t / n_t, v_c / n_c
    se = math.sqrt(se2_t + se2_c)
    diff = m_t - m_c
    df: float | None = None
    if se == 0:
        statistic, p_value, half = 0.0, 1.0, 0.0
    else:
        df = (se2_t + se2_c) ** 2 / (se2_t**2 / (n_t - 1) + se2_c**2 / (n_c - 1))
        statistic = diff / se
        p_value = float(2 * sps.t.sf(abs(statistic), df))
        half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    # Same Welch t quantile for the relative CI as for the absolute one (as gbstats does).
    lift, rel_se, rel_low, rel_high = relative_lift(m_t, v_t, n_t, m_c, v_c, n_c, alpha, df=df)
    return Effect(
        control_value=m_c,
        treatment_value=m_t,
        estimate=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        rel_lift=lift,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        rel_se=rel_se,
        p_value=p_value,
        statistic=float(statistic),
        method="Welch t-test, Welch-Satterthwaite CI, delta-method relative CI (t quantile)",
    )
