"""Variance reduction with pre-period covariates: regression adjustment from sufficient statistics.

What was known about recipients before the send (their clicks and opens in the previous 90 days,
last year's spend) predicts what they do after it; subtracting the predictable part leaves a less
noisy comparison, so the same precision needs fewer recipients. CUPED (Deng, Xu, Kohavi & Walker,
WSDM 2013) does this with one covariate; Statsig's CURE and Eppo's CUPED++ with many.

The estimator is Lin's (2013, "Agnostic notes on regression adjustments to experimental data",
Annals of Applied Statistics 7(1)) fully interacted regression: in each arm, the outcome is
regressed on the covariates centred at their mean over both arms; the adjusted arm mean is that
regression's intercept, ``ȳ_a - β_a'(x̄_a - x̄)``, and the effect is the difference of intercepts.
It equals the coefficient of the treatment dummy in ``y ~ T * (X - x̄)`` (statsmodels OLS), is
consistent without any model being true (randomisation alone), and is asymptotically never less
precise than the difference in means or the pooled-slope CUPED. With one covariate it is CUPED.

Everything is computed from per-arm sufficient statistics — n, Σy, Σy², Σx, Σxxᵀ, Σxy
(:class:`Moments`) — which the engine aggregates in SQL; no per-recipient frame leaves the engine.

Standard error (as documented, and tested against statsmodels to 1e-6): each arm's intercept gets
its classical OLS standard error ``σ̂_a² (1/n_a + d_aᵀ S_a⁻¹ d_a)`` with its own residual variance
σ̂_a² (d_a = x̄_a - x̄, S_a the centred cross-product matrix), and the arms' variances add, as the
arms are independent samples. That is statsmodels ``OLS(y_a, [1, X_a - x̄]).fit().bse[0]`` per arm,
combined like Welch's test combines two variances: heteroscedasticity *between* arms is allowed.
A heteroscedasticity-robust (HC) sandwich within arms would need fourth-order moments (Σe²zzᵀ) the
engine does not aggregate; it differs from this SE by O(1/n) (measured on Hillstrom in
tests/test_adjustment.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

from loopexp.stats.effect import Effect
from loopexp.stats.sequential import GaussianMethod, sequential_effect


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of an outcome ``y`` and covariates ``x`` (k of them) in one arm.

    Attributes:
        n: recipients.
        sum_y: Σy.
        sum_y2: Σy².
        sum_x: Σx, shape (k,).
        sum_xx: Σxxᵀ, shape (k, k).
        sum_xy: Σx·y, shape (k,).
    """

    n: int
    sum_y: float
    sum_y2: float
    sum_x: np.ndarray
    sum_xx: np.ndarray
    sum_xy: np.ndarray

    @classmethod
    def from_arrays(cls, y: Sequence[float] | np.ndarray, x: np.ndarray) -> Moments:
        """Moments of in-memory arrays (tests, simulations); the engine computes them in SQL."""
        y = np.asarray(y, dtype=float)
        x = np.asarray(x, dtype=float).reshape(len(y), -1)
        return cls(len(y), float(y.sum()), float(y @ y), x.sum(axis=0), x.T @ x, x.T @ y)

    @classmethod
    def from_sums(
        cls,
        n: int,
        sum_y: float,
        sum_y2: float,
        sum_x: Sequence[float],
        sum_xx: Sequence[Sequence[float]],
        sum_xy: Sequence[float],
    ) -> Moments:
        """Moments from plain numbers (e.g. one row of an engine query)."""
        k = len(sum_x)
        return cls(
            int(n),
            float(sum_y),
            float(sum_y2),
            np.asarray(sum_x, dtype=float).reshape(k),
            np.asarray(sum_xx, dtype=float).reshape(k, k),
            np.asarray(sum_xy, dtype=float).reshape(k),
        )

    @property
    def k(self) -> int:
        """Number of covariates."""
        return len(self.sum_x)

    def __add__(self, other: Moments) -> Moments:
        """Pool two groups (e.g. all mailed arms)."""
        return Moments(
            self.n + other.n,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_x + other.sum_x,
            self.sum_xx + other.sum_xx,
            self.sum_xy + other.sum_xy,
        )


class ArmFit(NamedTuple):
    """One arm's regression on the centred covariates."""

    adjusted_mean: float
    variance: float
    """Variance of ``adjusted_mean`` (classical OLS variance of the intercept)."""
    mean: float
    variance_unadjusted: float
    """Variance of the plain mean, s²/n."""
    slopes: np.ndarray


class AdjustedEffect(NamedTuple):
    """A regression-adjusted comparison, with what the adjustment bought.

    Attributes:
        effect: the comparison on adjusted means (intervals fixed-horizon or always-valid).
        se: standard error of the adjusted difference.
        se_unadjusted: standard error of the plain difference in means (Welch).
        ci_narrowing: ``1 - se / se_unadjusted``: how much shorter the interval is.
        variance_reduction: ``1 - se² / se_unadjusted²``: the share of recipients it saves.
    """

    effect: Effect
    se: float
    se_unadjusted: float
    ci_narrowing: float
    variance_reduction: float


def fit_arm(m: Moments, center: np.ndarray) -> ArmFit:
    """Regress y on (x - center) in one arm; return its intercept and that intercept's variance."""
    if m.n < m.k + 2:
        raise ValueError(
            f"an arm has {m.n} recipients for {m.k} covariate(s); regression adjustment needs at "
            f"least {m.k + 2}"
        )
    mean_y = m.sum_y / m.n
    mean_x = m.sum_x / m.n
    s_xx = m.sum_xx - m.n * np.outer(mean_x, mean_x)
    s_xy = m.sum_xy - m.n * mean_x * mean_y
    s_yy = max(m.sum_y2 - m.n * mean_y * mean_y, 0.0)
    # A covariate constant within the arm makes S singular: the pseudo-inverse drops it (as a
    # rank-revealing least-squares fit would) and the residual degrees of freedom count the rank.
    s_inv = np.linalg.pinv(s_xx, rcond=1e-12, hermitian=True)
    rank = int(np.linalg.matrix_rank(s_xx, hermitian=True)) if m.k else 0
    slopes = s_inv @ s_xy
    rss = max(s_yy - float(slopes @ s_xy), 0.0)
    sigma2 = rss / (m.n - rank - 1)
    d = mean_x - center
    variance = sigma2 * (1.0 / m.n + float(d @ s_inv @ d))
    adjusted = mean_y - float(slopes @ d)
    return ArmFit(adjusted, variance, mean_y, s_yy / (m.n - 1) / m.n, slopes)


def fit_arms(treatment: Moments, control: Moments) -> tuple[ArmFit, ArmFit]:
    """Both arms' regressions, covariates centred at their mean over the two arms."""
    if treatment.k != control.k:
        raise ValueError(f"arms have {treatment.k} and {control.k} covariates; they must match")
    center = (treatment.sum_x + control.sum_x) / (treatment.n + control.n)
    return fit_arm(treatment, center), fit_arm(control, center)


def adjusted_method(
    treatment: Moments,
    control: Moments,
    tuning_n: float | None = None,
    design_alpha: float = 0.05,
) -> tuple[GaussianMethod, float]:
    """The adjusted comparison as a :class:`~loopexp.stats.comparison.TwoSampleMethod`.

    Returns the method (fixed-horizon z, or always-valid with ``tuning_n``) and its CI narrowing
    against the unadjusted difference in means.
    """
    t, c = fit_arms(treatment, control)
    se = math.sqrt(t.variance + c.variance)
    se_plain = math.sqrt(t.variance_unadjusted + c.variance_unadjusted)
    label = f"Lin regression adjustment on {control.k} pre-period covariate(s)"
    method = GaussianMethod(
        t.adjusted_mean,
        t.variance * treatment.n,
        treatment.n,
        c.adjusted_mean,
        c.variance * control.n,
        control.n,
        tuning_n,
        design_alpha,
    )
    method.description = f"{label}; {method.description}"
    return method, (1 - se / se_plain if se_plain > 0 else 0.0)


def regression_adjusted(
    treatment: Moments,
    control: Moments,
    alpha: float = 0.05,
    tuning_n: float | None = None,
    design_alpha: float | None = None,
) -> AdjustedEffect:
    """Lin-regression-adjusted treatment-minus-control comparison from per-arm moments.

    Args:
        treatment: the challenger arm's moments.
        control: the control arm's moments (same covariates, same order).
        alpha: interval level ``1 - alpha`` and test level.
        tuning_n: when given, intervals are always-valid confidence sequences and the p-value is
            always-valid (:mod:`loopexp.stats.sequential`), tuned at this total sample.
        design_alpha: the alpha the sequential mixture is tuned for (default ``alpha``).

    Returns:
        The adjusted comparison; ``effect.estimate`` equals the coefficient of the treatment dummy
        in the statsmodels OLS ``y ~ T * (X - x̄)``.
    """
    t, c = fit_arms(treatment, control)
    se = math.sqrt(t.variance + c.variance)
    se_plain = math.sqrt(t.variance_unadjusted + c.variance_unadjusted)
    label = f"Lin regression adjustment on {control.k} pre-period covariate(s)"
    if tuning_n is not None:
        effect = sequential_effect(
            t.adjusted_mean,
            t.variance * treatment.n,
            treatment.n,
            c.adjusted_mean,
            c.variance * control.n,
            control.n,
            alpha,
            tuning_n,
            design_alpha,
            f"{label}; always-valid confidence sequence (normal mixture, n*={tuning_n:g})",
        )
    else:
        effect = _fixed_effect(t, c, se, alpha, f"{label}; z-test, normal CI, delta-method lift")
    return AdjustedEffect(
        effect=effect,
        se=se,
        se_unadjusted=se_plain,
        ci_narrowing=1 - se / se_plain if se_plain > 0 else 0.0,
        variance_reduction=1 - se**2 / se_plain**2 if se_plain > 0 else 0.0,
    )


def cuped(
    treatment: Moments, control: Moments, alpha: float = 0.05, tuning_n: float | None = None
) -> AdjustedEffect:
    """CUPED: :func:`regression_adjusted` with exactly one pre-period covariate."""
    if treatment.k != 1 or control.k != 1:
        raise ValueError("CUPED takes exactly one covariate; use regression_adjusted for more")
    return regression_adjusted(treatment, control, alpha, tuning_n)


def _fixed_effect(t: ArmFit, c: ArmFit, se: float, alpha: float, method: str) -> Effect:
    diff = t.adjusted_mean - c.adjusted_mean
    z_crit = float(sps.norm.ppf(1 - alpha / 2))
    if se > 0:
        statistic = diff / se
        p_value = float(2 * sps.norm.sf(abs(statistic)))
    else:
        statistic, p_value = 0.0, 1.0
    nan = float("nan")
    lift = rel_se = rel_low = rel_high = nan
    if c.adjusted_mean != 0:
        lift = t.adjusted_mean / c.adjusted_mean - 1
        rel_se = math.sqrt(
            t.variance / c.adjusted_mean**2 + t.adjusted_mean**2 * c.variance / c.adjusted_mean**4
        )
        rel_low, rel_high = lift - z_crit * rel_se, lift + z_crit * rel_se
    return Effect(
        control_value=c.adjusted_mean,
        treatment_value=t.adjusted_mean,
        estimate=diff,
        ci_low=diff - z_crit * se,
        ci_high=diff + z_crit * se,
        rel_lift=lift,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        rel_se=rel_se,
        p_value=p_value,
        statistic=statistic,
        method=method,
    )
