"""Always-valid (sequential) comparisons: confidence sequences and always-valid p-values.

Why this method. Lifecycle flows are analysed every morning on the cumulative data; a fixed-horizon
test read daily ships false winners several times more often than its alpha. We use the
*asymptotic confidence sequence* of Waudby-Smith, Arnold, Wu, Howard & Ramdas, "Time-uniform central
limit theory and asymptotic confidence sequences" (Annals of Statistics, 2024; arXiv 2103.06476),
with the two-sided normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon (2021, eq. 14) —
the method GrowthBook (gbstats ``SequentialTwoSidedTTest``) and Eppo use. We chose it over mSPRT
(Johari, Pekelis & Walsh 2017) because

- it needs only the estimate and its standard error at each look — exactly what our fixed-horizon
  tests already compute from sufficient statistics (n, sums, sums of squares), for proportions,
  means and regression-adjusted means alike — while mSPRT needs a likelihood per metric type;
- it has published reference values (gbstats' test suite, in ``tests/data/stats-vectors.json``)
  that these functions reproduce to 5 decimals;
- the mixture's likelihood ratio *is* mSPRT's with a normal mixing distribution, so its reciprocal
  is an always-valid p-value (Johari et al.'s definition) dual to the confidence sequence: the
  ``1 - alpha`` sequence excludes 0 exactly when that p-value is below ``alpha``.

No library implements it on sufficient statistics (gbstats is not packaged for reuse and needs its
own statistic classes), so the few closed-form lines are written here.

The mixture is tuned by ``tuning_n`` (gbstats' "sequential tuning parameter" n*): the total sample
size at which the sequence is tightest. loopexp sets it to the planned sample of the comparison
(both arms), so the sequence costs least where the plan expects to decide. The number of looks need
not be known, and looking more often costs nothing.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from loopexp.stats.comparison import Intervals, TwoSampleMethod
from loopexp.stats.effect import Effect
from loopexp.stats.mean import mean_and_variance

#: gbstats' default tuning parameter, used when a spec has no planned sample.
DEFAULT_TUNING_N = 5000


def mixture_rho_squared(tuning_n: float, alpha: float = 0.05) -> float:
    """Mixing precision ρ² that makes the ``1 - alpha`` sequence tightest at ``tuning_n``.

    ρ² = (-2 log α + log(1 - 2 log α)) / n*  (Howard et al. 2021, eq. 16; as gbstats).
    """
    if tuning_n <= 0:
        raise ValueError(f"tuning_n must be positive; got {tuning_n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    log_a = math.log(alpha)
    return (-2 * log_a + math.log(1 - 2 * log_a)) / tuning_n


def cs_halfwidth(
    se: float, n_total: float, alpha: float, tuning_n: float, design_alpha: float = 0.05
) -> float:
    """Half-width of the two-sided ``1 - alpha`` asymptotic confidence sequence at one look.

    With σ² = se²·N the per-observation variance of the contrast and ρ² from ``tuning_n`` and
    ``design_alpha``: ``sqrt(σ² · 2(Nρ²+1)/(N²ρ²) · log(sqrt(Nρ²+1)/alpha))``.

    Args:
        se: standard error of the estimate at this look (fixed-horizon formula).
        n_total: recipients in both arms at this look.
        alpha: level of the sequence (e.g. a Bonferroni share of the family's alpha).
        tuning_n: total sample at which the sequence is tightest (see module docstring).
        design_alpha: the alpha the mixture is tuned for (fixed per experiment).
    """
    if n_total <= 0 or not math.isfinite(se):
        return float("inf")
    rho2 = mixture_rho_squared(tuning_n, design_alpha)
    n = float(n_total)
    ratio = n * rho2 + 1
    return math.sqrt(se * se * n) * math.sqrt(
        2 * ratio / (n * n * rho2) * math.log(math.sqrt(ratio) / alpha)
    )


def always_valid_pvalue(
    estimate: float, se: float, n_total: float, tuning_n: float, design_alpha: float = 0.05
) -> float:
    """Always-valid p-value of "no difference": the reciprocal of the normal-mixture ratio.

    ``p = min(1, sqrt(Nρ²+1) · exp(-z² Nρ² / (2(Nρ²+1))))`` with z = estimate / se. Under the null,
    P(p ever ≤ α, at any look) ≤ α (Ville's inequality, asymptotically). It is below ``alpha``
    exactly when the ``1 - alpha`` sequence of :func:`cs_halfwidth` (same ρ) excludes 0.
    """
    if not (math.isfinite(estimate) and math.isfinite(se)) or se <= 0 or n_total <= 0:
        return 1.0
    rho2 = mixture_rho_squared(tuning_n, design_alpha)
    ratio = n_total * rho2 + 1
    z2 = (estimate / se) ** 2
    log_p = 0.5 * math.log(ratio) - z2 * n_total * rho2 / (2 * ratio)
    return float(min(1.0, math.exp(log_p)))


def always_valid_pvalues(
    z: np.ndarray, n_total: np.ndarray, tuning_n: float, design_alpha: float = 0.05
) -> np.ndarray:
    """:func:`always_valid_pvalue` for arrays of z statistics (for simulations of many looks)."""
    rho2 = mixture_rho_squared(tuning_n, design_alpha)
    ratio = np.asarray(n_total, dtype=float) * rho2 + 1
    log_p = 0.5 * np.log(ratio) - np.square(z) * (ratio - 1) / (2 * ratio)
    return np.minimum(1.0, np.exp(log_p))


def sequential_effect(
    mean_t: float,
    var_t: float,
    n_t: int,
    mean_c: float,
    var_c: float,
    n_c: int,
    alpha: float = 0.05,
    tuning_n: float = DEFAULT_TUNING_N,
    design_alpha: float | None = None,
    method: str = "",
) -> Effect:
    """Always-valid comparison of two means from their per-arm means and variances.

    The absolute difference gets the confidence sequence on the unpooled SE; the relative lift the
    sequence on its delta-method SE (as gbstats). ``p_value`` is the always-valid p-value of the
    absolute difference, ``statistic`` its z.
    """
    design_alpha = alpha if design_alpha is None else design_alpha
    n_total = n_t + n_c
    se = math.sqrt(var_t / n_t + var_c / n_c)
    diff = mean_t - mean_c
    half = cs_halfwidth(se, n_total, alpha, tuning_n, design_alpha) if se > 0 else 0.0
    p_value = always_valid_pvalue(diff, se, n_total, tuning_n, design_alpha)
    nan = float("nan")
    if mean_c == 0:
        lift = rel_se = rel_low = rel_high = nan
    else:
        lift = mean_t / mean_c - 1
        rel_se = math.sqrt(var_t / (n_t * mean_c**2) + mean_t**2 * var_c / (n_c * mean_c**4))
        rel_half = cs_halfwidth(rel_se, n_total, alpha, tuning_n, design_alpha) if rel_se else 0.0
        rel_low, rel_high = lift - rel_half, lift + rel_half
    return Effect(
        control_value=mean_c,
        treatment_value=mean_t,
        estimate=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        rel_lift=lift,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        rel_se=rel_se,
        p_value=p_value,
        statistic=diff / se if se > 0 else 0.0,
        method=method
        or f"always-valid: asymptotic confidence sequence (normal mixture, n*={tuning_n:g})",
    )


def sequential_proportions(
    successes_t: float,
    n_t: int,
    successes_c: float,
    n_c: int,
    alpha: float = 0.05,
    tuning_n: float = DEFAULT_TUNING_N,
    design_alpha: float | None = None,
) -> Effect:
    """Always-valid comparison of two rates (Bernoulli variance p(1-p) per arm)."""
    if min(n_t, n_c) <= 0:
        raise ValueError(f"both groups need recipients; got n_t={n_t}, n_c={n_c}")
    p_t, p_c = successes_t / n_t, successes_c / n_c
    return sequential_effect(
        p_t,
        p_t * (1 - p_t),
        n_t,
        p_c,
        p_c * (1 - p_c),
        n_c,
        alpha,
        tuning_n,
        design_alpha,
        f"always-valid two-proportion test: asymptotic confidence sequence "
        f"(normal mixture, n*={tuning_n:g})",
    )


def sequential_means(
    n_t: int,
    sum_t: float,
    sum_sq_t: float,
    n_c: int,
    sum_c: float,
    sum_sq_c: float,
    alpha: float = 0.05,
    tuning_n: float = DEFAULT_TUNING_N,
    design_alpha: float | None = None,
) -> Effect:
    """Always-valid comparison of two means from n, sum and sum of squares per arm."""
    if min(n_t, n_c) < 2:
        raise ValueError(f"each group needs at least 2 recipients; got n_t={n_t}, n_c={n_c}")
    m_t, v_t = mean_and_variance(n_t, sum_t, sum_sq_t)
    m_c, v_c = mean_and_variance(n_c, sum_c, sum_sq_c)
    return sequential_effect(
        m_t,
        v_t,
        n_t,
        m_c,
        v_c,
        n_c,
        alpha,
        tuning_n,
        design_alpha,
        f"always-valid mean test: asymptotic confidence sequence (normal mixture, n*={tuning_n:g})",
    )


def tuning_n_for_plan(planned_per_arm: int | None, arms_in_comparison: int = 2) -> float:
    """Tuning parameter n* for a comparison: its planned total sample, or gbstats' default."""
    if not planned_per_arm:
        return float(DEFAULT_TUNING_N)
    return float(planned_per_arm * arms_in_comparison)


def fixed_horizon_z(alpha: float) -> float:
    """Two-sided normal quantile, for comparing a sequence's width with a fixed-horizon CI."""
    return float(sps.norm.ppf(1 - alpha / 2))


class GaussianMethod(TwoSampleMethod):
    """A comparison from two independent, asymptotically normal arm estimates.

    With ``tuning_n`` it is always-valid: the p-value is :func:`always_valid_pvalue` and the
    intervals are confidence sequences (:func:`cs_halfwidth`), so the analysis may be repeated on
    the cumulative data of every look. Without, it is the fixed-horizon z-test with normal
    intervals (used for regression-adjusted means). The difference interval inverts the test
    exactly; the ratio interval is the delta-method one on the relative lift (as gbstats), which
    agrees with the test except within rounding of the two standard errors.
    """

    def __init__(
        self,
        mean_t: float,
        var_t: float,
        n_t: int,
        mean_c: float,
        var_c: float,
        n_c: int,
        tuning_n: float | None = None,
        design_alpha: float = 0.05,
        description: str = "",
    ):
        if min(n_t, n_c) <= 0:
            raise ValueError(f"both groups need recipients; got n_t={n_t}, n_c={n_c}")
        self.treatment_value, self.control_value = mean_t, mean_c
        self.var_t, self.var_c, self.n_t, self.n_c = var_t, var_c, n_t, n_c
        self.n_total = n_t + n_c
        self.se = math.sqrt(max(var_t / n_t + var_c / n_c, 0.0))
        self.tuning_n, self.design_alpha = tuning_n, design_alpha
        self.name = "always-valid" if tuning_n is not None else "normal"
        self.description = description or (
            f"always-valid: asymptotic confidence sequence (normal mixture, n*={tuning_n:g}; "
            "Waudby-Smith et al. 2023)"
            if tuning_n is not None
            else "z-test, normal CI of the difference, delta-method CI of the ratio"
        )

    @classmethod
    def from_stats(
        cls, kind: str, t, c, tuning_n: float | None, design_alpha: float = 0.05
    ) -> GaussianMethod:
        """From two ``GroupStats`` of a ``proportion`` or ``mean`` metric."""
        if kind == "proportion":
            p_t, p_c = t.sum / t.n, c.sum / c.n
            v_t, v_c = p_t * (1 - p_t), p_c * (1 - p_c)
            what = "two-proportion"
        else:
            p_t, v_t = mean_and_variance(t.n, t.sum, t.sum_sq)
            p_c, v_c = mean_and_variance(c.n, c.sum, c.sum_sq)
            what = "mean"
        method = cls(p_t, v_t, t.n, p_c, v_c, c.n, tuning_n, design_alpha)
        if tuning_n is not None:
            method.description = f"always-valid {what} test: {method.description}"
        return method

    def _half(self, se: float, alpha: float) -> float:
        if se <= 0 or not math.isfinite(se):
            return 0.0 if se == 0 else math.inf
        if self.tuning_n is None:
            return float(sps.norm.ppf(1 - alpha / 2)) * se
        return cs_halfwidth(se, self.n_total, alpha, self.tuning_n, self.design_alpha)

    def _two_sided_p(self, shift: float, se: float) -> float:
        if se <= 0 or not math.isfinite(shift):
            return 1.0
        if self.tuning_n is None:
            return float(2 * sps.norm.sf(abs(shift) / se))
        return always_valid_pvalue(shift, se, self.n_total, self.tuning_n, self.design_alpha)

    def test(self) -> tuple[float, float]:  # noqa: D102
        if self.se <= 0:
            return 0.0, 1.0  # no variance: the data carry no evidence of a difference
        return self.estimate / self.se, self._two_sided_p(self.estimate, self.se)

    def interval(self, alpha: float) -> Intervals:  # noqa: D102
        half = self._half(self.se, alpha)
        if self.se <= 0:
            half = math.inf
        lift, rel_se = self.rel_lift, self.relative_se()
        if math.isnan(lift) or math.isnan(rel_se):
            ratio_low, ratio_high = -math.inf, math.inf
        else:
            rel_half = self._half(rel_se, alpha) if rel_se > 0 else math.inf
            ratio_low, ratio_high = 1 + lift - rel_half, 1 + lift + rel_half
        return Intervals(alpha, self.estimate - half, self.estimate + half, ratio_low, ratio_high)

    def one_sided_p(self, ratio: float, alternative: str) -> float:  # noqa: D102
        lift, rel_se = self.rel_lift, self.relative_se()
        if math.isnan(lift) or not rel_se > 0:
            return 0.5
        shift = lift - (ratio - 1)
        half_p = self._two_sided_p(shift, rel_se) / 2
        on_side = shift < 0 if alternative == "less" else shift > 0
        return half_p if on_side else 1 - half_p

    def relative_se(self) -> float:  # noqa: D102
        m_t, m_c = self.treatment_value, self.control_value
        if m_c == 0:
            return math.nan
        return math.sqrt(
            self.var_t / (self.n_t * m_c**2) + m_t**2 * self.var_c / (self.n_c * m_c**4)
        )
