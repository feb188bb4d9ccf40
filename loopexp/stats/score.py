"""Two proportions: one score statistic, its test and the intervals that invert it.

The decision must never read an interval that disagrees with its test (a "significant" winner whose
interval contains 0). So the test and both intervals come from the same statistic, the score
statistic of Miettinen & Nurminen (1985) without their N/(N-1) variance factor:

    z(H0) = (p̂_t - p̂_c - δ) / sqrt(p̃_t(1-p̃_t)/n_t + p̃_c(1-p̃_c)/n_c)          (difference, δ)
    z(H0) = (p̂_t - R p̂_c)  / sqrt(p̃_t(1-p̃_t)/n_t + R² p̃_c(1-p̃_c)/n_c)      (ratio, R)

with p̃ the maximum-likelihood rates under H0 (closed forms: Farrington & Manning's cubic for δ,
Miettinen & Nurminen's quadratic for R). At δ = 0 or R = 1 both equal the pooled z-test (R
``prop.test(correct = FALSE)``), so *the difference interval excludes 0, the ratio interval
excludes 1 and the test rejects, all at once*. The difference interval is Mee's (1984), the ratio
interval Koopman's (1984); both keep their level at small n and at rates of 0 or 1, where the Wald
interval collapses to a point (0/20 against 2/20 gave a relative CI of [-100 %, -100 %]).

Why our own code: statsmodels' ``confint_proportions_2indep(method="score")`` computes the same
intervals on ordinary inputs (tests check agreement), but raises at boundary counts (0/20 vs 2/20,
3/3 vs 3/3) and returns complex or NaN bounds there; those are exactly the inputs a decision must
survive. Bounds are found with scipy's ``brentq`` on the monotone statistic.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from scipy import optimize

_EPS = 1e-12
# statistics.NormalDist / math.erfc rather than scipy.stats.norm for scalars: same values (AS241
# quantile, erfc), ~50x less call overhead, which mattered for 1,000 comparisons in under 1 s.
_NORMAL = NormalDist()


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _constrained_rates_diff(x_t: float, n_t: int, x_c: float, n_c: int, delta: float):
    """ML rates (p̃_t, p̃_c) under p_t - p_c = delta (Farrington & Manning 1990, eq. 5, closed form).

    Not statsmodels' parametrisation of this cubic: in statsmodels 0.14 its root is off the
    likelihood's maximum for delta != 0 (gradient 0.28 at 7/34 vs 1/34, delta = 0.0287), which
    moves its "score" difference bounds by ~3e-4 there; R's numerical maximisation agrees with
    this one (tests/data/score_intervals.R).
    """
    if delta == 0:
        p = (x_t + x_c) / (n_t + n_c)
        return p, p
    p1, p2, theta = x_t / n_t, x_c / n_c, n_c / n_t
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p2 + delta * (theta + 2))
    c = delta * delta + delta * (2 * p1 + theta + 1) + p1 + theta * p2
    d = -p1 * delta * (1 + delta)
    v = b**3 / (3 * a) ** 3 - b * c / (6 * a * a) + d / (2 * a)
    u = math.copysign(math.sqrt(max(b * b / (3 * a) ** 2 - c / (3 * a), 0.0)), v)
    if u == 0:
        r_t = -b / (3 * a)
    else:
        w = (math.pi + math.acos(min(1.0, max(-1.0, v / u**3)))) / 3
        r_t = 2 * u * math.cos(w) - b / (3 * a)
    r_t = min(1.0, 1.0 + delta, max(0.0, delta, r_t))
    return r_t, r_t - delta


def _constrained_rates_ratio(x_t: float, n_t: int, x_c: float, n_c: int, ratio: float):
    """ML rates (p̃_t, p̃_c) under p_t = ratio · p_c (Miettinen & Nurminen 1985, closed form)."""
    n = n_t + n_c
    if ratio == 1:
        p = (x_t + x_c) / n
        return p, p
    a = n * ratio
    b = -(n_t * ratio + x_t + n_c + x_c * ratio)
    c = x_t + x_c
    p_c = (-b - math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
    p_c = min(p_c, 1.0, 1.0 / ratio)
    return ratio * p_c, p_c


def z_diff(x_t: float, n_t: int, x_c: float, n_c: int, delta: float = 0.0) -> float:
    """Score statistic of H0: p_t - p_c = delta (positive when the treatment is above delta)."""
    p_t, p_c = x_t / n_t, x_c / n_c
    r_t, r_c = _constrained_rates_diff(x_t, n_t, x_c, n_c, delta)
    var = r_t * (1 - r_t) / n_t + r_c * (1 - r_c) / n_c
    num = p_t - p_c - delta
    if var <= 0:
        return 0.0 if abs(num) < _EPS else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def z_ratio(x_t: float, n_t: int, x_c: float, n_c: int, ratio: float = 1.0) -> float:
    """Score statistic of H0: p_t / p_c = ratio (positive when the treatment is above it)."""
    p_t, p_c = x_t / n_t, x_c / n_c
    r_t, r_c = _constrained_rates_ratio(x_t, n_t, x_c, n_c, ratio)
    var = r_t * (1 - r_t) / n_t + ratio * ratio * r_c * (1 - r_c) / n_c
    num = p_t - ratio * p_c
    if var <= 0:
        return 0.0 if abs(num) < _EPS else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def score_test(x_t: float, n_t: int, x_c: float, n_c: int) -> tuple[float, float]:
    """``(z, two-sided p)`` of no difference: the pooled z-test.

    0 and 1 when both rates are 0 (or both 1), which carry no evidence of a difference.
    """
    z = z_diff(x_t, n_t, x_c, n_c, 0.0)
    return z, 2 * _norm_sf(abs(z))


def _root(f, lo: float, hi: float) -> float:
    return float(optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-12, maxiter=200))


def diff_interval(
    x_t: float, n_t: int, x_c: float, n_c: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` score (Mee) interval of p_t - p_c: every delta the test keeps."""
    q = _NORMAL.inv_cdf(1 - alpha / 2)
    est = x_t / n_t - x_c / n_c
    span = 1.0 - 1e-12

    def f(delta: float, target: float) -> float:
        return z_diff(x_t, n_t, x_c, n_c, delta) - target

    # z decreases in delta: +inf-ish near -1, 0 at the estimate, -inf-ish near +1.
    lo = -1.0 if f(-span, q) <= 0 or est <= -span else _root(lambda d: f(d, q), -span, est)
    hi = 1.0 if f(span, -q) >= 0 or est >= span else _root(lambda d: f(d, -q), est, span)
    return lo, hi


def ratio_interval(
    x_t: float, n_t: int, x_c: float, n_c: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` score (Koopman) interval of p_t / p_c; bounds may be 0 or inf.

    A treatment with no successes has lower bound 0; a control with none has upper bound inf (the
    ratio is then unbounded above), and with no successes anywhere the interval is [0, inf].
    """
    q = _NORMAL.inv_cdf(1 - alpha / 2)
    if x_t == 0 and x_c == 0:
        return 0.0, math.inf

    def z(log_r: float) -> float:
        return z_ratio(x_t, n_t, x_c, n_c, math.exp(log_r))

    start = math.log((x_t / n_t) / (x_c / n_c)) if x_t > 0 and x_c > 0 else 0.0
    lo = 0.0 if x_t == 0 else math.exp(_solve_decreasing(z, q, start))
    hi = math.inf if x_c == 0 else math.exp(_solve_decreasing(z, -q, start))
    return lo, hi


_LOG_LIMIT = 700.0


def _solve_decreasing(fun, target: float, start: float) -> float:
    """Root of ``fun(x) = target`` for a decreasing ``fun``, bracketed outwards from ``start``.

    ±inf when the root lies beyond e^±700.
    """
    f0 = fun(start) - target
    if f0 == 0:
        return start
    direction = 1.0 if f0 > 0 else -1.0
    step, inner = 1.0, start
    while True:
        outer = start + direction * step
        if abs(outer) > _LOG_LIMIT:
            return direction * math.inf
        if (fun(outer) - target > 0) != (f0 > 0):
            break
        inner, step = outer, step * 2
    a, b = sorted((inner, outer))
    return _root(lambda x: fun(x) - target, a, b)


def one_sided_p_ratio(
    x_t: float, n_t: int, x_c: float, n_c: int, ratio: float, alternative: str
) -> float:
    """One-sided p of H0 on p_t / p_c = ratio.

    ``alternative="less"`` asks whether the true ratio is below ``ratio``, ``"greater"`` above.
    Rejects at alpha exactly when the matching end of :func:`ratio_interval` at ``2 alpha`` is
    beyond ``ratio``.
    """
    z = z_ratio(x_t, n_t, x_c, n_c, ratio)
    return _norm_sf(-z) if alternative == "less" else _norm_sf(z)
