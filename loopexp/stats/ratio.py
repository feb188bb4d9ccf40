"""Ratio metrics (e.g. clicks per open) compared with the delta method, from sufficient statistics.

A ratio metric is ``sum(y) / sum(x)`` over a variant's recipients, where each recipient
contributes a numerator ``y`` and a denominator ``x`` (clicked and opened, revenue and clicks).
Recipients are the randomisation unit, so the pairs ``(x, y)`` are i.i.d. within an arm, but
``y`` and ``x`` are correlated; the first-order (delta-method) variance of a ratio of means is

    Var(ȳ / x̄) ≈ (σ²_y − 2 R σ_xy + R² σ²_x) / (n μ_x²),   R = μ_y / μ_x

(Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric Analytics", KDD). statsmodels has
no ratio-of-means test, hence this small function; it needs n, Σy, Σy², Σx, Σx² and Σxy per arm.
"""

from __future__ import annotations

import math

from scipy import stats as sps

from loopexp.stats.effect import Effect, relative_lift


def ratio_and_variance(
    n: int, sum_y: float, sum_y2: float, sum_x: float, sum_x2: float, sum_xy: float
) -> tuple[float, float]:
    """The ratio ``Σy / Σx`` and the delta-method variance of its estimate (NaN when Σx is 0)."""
    if n < 2 or sum_x == 0:
        return float("nan"), float("nan")
    mx, my = sum_x / n, sum_y / n
    var_x = max(sum_x2 - n * mx * mx, 0.0) / (n - 1)
    var_y = max(sum_y2 - n * my * my, 0.0) / (n - 1)
    cov = (sum_xy - n * mx * my) / (n - 1)
    ratio = my / mx
    variance = max(var_y - 2 * ratio * cov + ratio * ratio * var_x, 0.0) / (n * mx * mx)
    return ratio, variance


def compare_ratios(
    t: tuple[int, float, float, float, float, float],
    c: tuple[int, float, float, float, float, float],
    alpha: float = 0.05,
) -> Effect:
    """Delta-method z-test of a ratio (treatment − control); arm = ``(n, Σy, Σy², Σx, Σx², Σxy)``.

    Raises:
        ValueError: when an arm has fewer than 2 recipients or no denominator (Σx = 0): a
            comparison that cannot be made, never "no difference".
    """
    r_t, v_t = ratio_and_variance(*t)
    r_c, v_c = ratio_and_variance(*c)
    if math.isnan(r_t) or math.isnan(r_c):
        raise ValueError(
            f"each arm needs at least 2 recipients and a non-zero denominator sum; got "
            f"n_t={t[0]}, Σx_t={t[3]}, n_c={c[0]}, Σx_c={c[3]}"
        )
    diff = r_t - r_c
    se = math.sqrt(v_t + v_c)
    z = float(sps.norm.ppf(1 - alpha / 2))
    if se == 0:
        statistic, p_value = 0.0, 1.0
    else:
        statistic = diff / se
        p_value = float(2 * sps.norm.sf(abs(statistic)))
    # relative_lift wants per-recipient variances: n · Var(ratio) plays that role here.
    lift, rel_se, rel_low, rel_high = relative_lift(
        r_t, v_t * t[0], t[0], r_c, v_c * c[0], c[0], alpha
    )
    return Effect(
        control_value=r_c,
        treatment_value=r_t,
        estimate=diff,
        ci_low=diff - z * se,
        ci_high=diff + z * se,
        rel_lift=lift,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        rel_se=rel_se,
        p_value=p_value,
        statistic=statistic,
        method="ratio of means, delta-method z-test and CI, delta-method relative CI",
    )
