"""The comparison layer: each comparison carries its own test and the intervals that invert it.

A :class:`TwoSampleMethod` is built from the sufficient statistics of a treatment and a control.
It answers the questions the decision asks, always from one statistic, so what a user reads agrees
with what was decided:

* :meth:`~TwoSampleMethod.p_value`: two-sided p of "no difference";
* :meth:`~TwoSampleMethod.interval`: the difference and ratio intervals at any level (the level an
  adjusted test used, see :func:`loopexp.stats.multiplicity.interval_alphas`);
* :meth:`~TwoSampleMethod.one_sided_p`: one-sided p of H0 "ratio = r" (guardrails at their margin).

Methods today: :class:`ScoreProportions` (score test, Mee / Koopman intervals),
:class:`WelchFieller` (Welch t, Welch / Fieller intervals) and :class:`DeltaRatio` (ratio metrics,
delta-method z on the variances of :mod:`loopexp.stats.ratio`). A sequential (always-valid) method
can slot in later as another subclass: the analysis asks only these questions.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

from loopexp.stats.fieller import WelchStats, welch_stats, welch_test
from loopexp.stats.fieller import diff_interval as welch_diff_interval
from loopexp.stats.fieller import one_sided_p_ratio as fieller_one_sided_p
from loopexp.stats.fieller import ratio_interval as fieller_ratio_interval
from loopexp.stats.ratio import ratio_and_variance
from loopexp.stats.score import diff_interval as mee_diff_interval
from loopexp.stats.score import one_sided_p_ratio as score_one_sided_p
from loopexp.stats.score import ratio_interval as koopman_ratio_interval
from loopexp.stats.score import score_test


class Intervals(NamedTuple):
    """Two-sided intervals of one comparison at level ``1 - alpha``.

    Attributes:
        alpha: the interval's alpha (per comparison, after any multiplicity adjustment).
        diff_low: lower bound of treatment - control.
        diff_high: upper bound of treatment - control.
        ratio_low: lower bound of treatment / control (0 or -inf when unbounded).
        ratio_high: upper bound of treatment / control (inf when unbounded).
    """

    alpha: float
    diff_low: float
    diff_high: float
    ratio_low: float
    ratio_high: float

    @property
    def rel_low(self) -> float:
        """Lower bound of the relative lift, ratio - 1."""
        return self.ratio_low - 1

    @property
    def rel_high(self) -> float:
        """Upper bound of the relative lift, ratio - 1."""
        return self.ratio_high - 1


class TwoSampleMethod(ABC):
    """Test and intervals of one metric, treatment against control, inverting one statistic."""

    name: str = ""
    description: str = ""

    control_value: float
    treatment_value: float

    @property
    def estimate(self) -> float:
        """Treatment minus control."""
        return self.treatment_value - self.control_value

    @property
    def rel_lift(self) -> float:
        """Treatment / control - 1; NaN when the control value is 0 (undefined)."""
        if self.control_value == 0:
            return math.nan
        return self.treatment_value / self.control_value - 1

    @abstractmethod
    def test(self) -> tuple[float, float]:
        """``(statistic, two-sided p)`` of no difference."""

    def p_value(self) -> float:
        """Two-sided p of no difference."""
        return self.test()[1]

    @abstractmethod
    def interval(self, alpha: float) -> Intervals:
        """Difference and ratio intervals at ``1 - alpha``.

        Each excludes "no difference" exactly when :meth:`p_value` < ``alpha``.
        """

    @abstractmethod
    def one_sided_p(self, ratio: float, alternative: str) -> float:
        """One-sided p of H0 "treatment / control = ratio" against ``alternative``.

        ``alternative`` is "less" or "greater"; the p-value is below ``alpha`` exactly when
        :meth:`interval` at ``2 alpha`` lies on that side of ``ratio``.
        """

    @abstractmethod
    def relative_se(self) -> float:
        """Delta-method standard error of the relative lift (for the Gaussian Bayesian view)."""


class ScoreProportions(TwoSampleMethod):
    """Two proportions: score test (= pooled z), Mee difference and Koopman ratio intervals."""

    name = "score"
    description = (
        "score test (pooled z, = prop.test without continuity correction), inverted: Mee CI of "
        "the difference, Koopman CI of the ratio"
    )

    def __init__(self, x_t: float, n_t: int, x_c: float, n_c: int):
        if min(n_t, n_c) <= 0:
            raise ValueError(f"both groups need recipients; got n_t={n_t}, n_c={n_c}")
        self.x_t, self.n_t, self.x_c, self.n_c = x_t, n_t, x_c, n_c
        self.treatment_value, self.control_value = x_t / n_t, x_c / n_c

    def test(self) -> tuple[float, float]:  # noqa: D102
        return score_test(self.x_t, self.n_t, self.x_c, self.n_c)

    def interval(self, alpha: float) -> Intervals:  # noqa: D102
        args = (self.x_t, self.n_t, self.x_c, self.n_c, alpha)
        return Intervals(alpha, *mee_diff_interval(*args), *koopman_ratio_interval(*args))

    def one_sided_p(self, ratio: float, alternative: str) -> float:  # noqa: D102
        if self.x_t == 0 and self.x_c == 0:
            return 0.5  # no event anywhere: no evidence either way
        return score_one_sided_p(self.x_t, self.n_t, self.x_c, self.n_c, ratio, alternative)

    def relative_se(self) -> float:  # noqa: D102
        p_t, p_c = self.treatment_value, self.control_value
        if p_c == 0:
            return math.nan
        return math.sqrt(
            p_t * (1 - p_t) / (self.n_t * p_c**2) + p_t**2 * (1 - p_c) / (self.n_c * p_c**3)
        )


class WelchFieller(TwoSampleMethod):
    """Two means: Welch t-test, Welch-Satterthwaite difference and Fieller ratio intervals."""

    name = "welch-fieller"
    description = "Welch t-test, inverted: Welch CI of the difference, Fieller CI of the ratio"

    def __init__(
        self, n_t: int, sum_t: float, sum_sq_t: float, n_c: int, sum_c: float, sum_sq_c: float
    ):
        self.w = welch_stats(n_t, sum_t, sum_sq_t, n_c, sum_c, sum_sq_c)
        self.n_t, self.n_c = n_t, n_c
        self.treatment_value, self.control_value = self.w.mean_t, self.w.mean_c

    def test(self) -> tuple[float, float]:  # noqa: D102
        return welch_test(self.w)

    def interval(self, alpha: float) -> Intervals:  # noqa: D102
        if self.w.se2_t + self.w.se2_c <= 0:  # no variance: no evidence, no interval
            return Intervals(alpha, -math.inf, math.inf, -math.inf, math.inf)
        return Intervals(
            alpha, *welch_diff_interval(self.w, alpha), *fieller_ratio_interval(self.w, alpha)
        )

    def one_sided_p(self, ratio: float, alternative: str) -> float:  # noqa: D102
        if self.w.se2_t + self.w.se2_c <= 0:
            return 0.5
        return fieller_one_sided_p(self.w, ratio, alternative)

    def relative_se(self) -> float:  # noqa: D102
        m_t, m_c = self.w.mean_t, self.w.mean_c
        if m_c == 0:
            return math.nan
        return math.sqrt(self.w.se2_t / m_c**2 + m_t**2 * self.w.se2_c / m_c**4)


class DeltaRatio(WelchFieller):
    """Ratio metrics in the comparison layer: delta-method z-test, inverted.

    The two arms' ratio estimates are approximately normal with the delta-method variances, so the
    Welch/Fieller machinery applies with infinite degrees of freedom (a z-test): a Wald interval
    of the difference and a Fieller interval of the ratio of ratios, each excluding "no
    difference" exactly when the test rejects.
    """

    name = "delta-ratio"
    description = (
        "ratio of means: delta-method z-test, inverted: Wald CI of the difference, Fieller CI "
        "of the ratio"
    )

    def __init__(
        self,
        t: tuple[int, float, float, float, float, float],
        c: tuple[int, float, float, float, float, float],
    ):
        r_t, v_t = ratio_and_variance(*t)
        r_c, v_c = ratio_and_variance(*c)
        if math.isnan(r_t) or math.isnan(r_c):
            raise ValueError(
                f"each arm needs at least 2 recipients and a non-zero denominator sum; got "
                f"n_t={t[0]}, Σx_t={t[3]}, n_c={c[0]}, Σx_c={c[3]}"
            )
        self.w = WelchStats(r_t, r_c, v_t, v_c, math.inf)
        self.n_t, self.n_c = t[0], c[0]
        self.treatment_value, self.control_value = r_t, r_c

    @classmethod
    def from_stats(cls, t, c) -> DeltaRatio:
        """From two ``GroupStats`` of a ratio metric (with den_sum, den_sum_sq, cross_sum)."""
        return cls(_sums(t), _sums(c))


def _sums(s) -> tuple[int, float, float, float, float, float]:
    return s.n, s.sum, s.sum_sq, s.den_sum or 0.0, s.den_sum_sq or 0.0, s.cross_sum or 0.0


def method_for(kind: str, t, c) -> TwoSampleMethod:
    """The method for a metric of ``kind`` (proportion, mean or ratio) on two ``GroupStats``."""
    if kind == "ratio":
        return DeltaRatio.from_stats(t, c)
    if kind == "proportion":
        return ScoreProportions(t.sum, t.n, c.sum, c.n)
    return WelchFieller(t.n, t.sum, t.sum_sq, c.n, c.sum, c.sum_sq)
