"""Normal shrinkage of a log lift (the winner's curse): numbers in, numbers out.

An estimate that was selected for being large (a winner, a significant first test) overstates the
truth; under a normal prior N(mu, tau²) of true log lifts its posterior mean is pulled towards mu
by b = tau² / (tau² + se²). Shared by :mod:`loopexp.learn.shrinkage` (prior learned from the
campaign's history) and :mod:`loopexp.analysis.power` (a first test, prior from the spec's MDE).
"""

from __future__ import annotations

import math

from scipy import stats as sps


def log_lift_se(
    lift: float | None, low: float | None, high: float | None, level: float | None
) -> tuple[float, float] | None:
    """(log ratio, its standard error) from a relative lift and its interval; None if unusable."""
    if lift is None or low is None or high is None or low <= -1 or lift <= -1:
        return None
    z = float(sps.norm.ppf(1 - (1 - (level or 0.95)) / 2))
    se = (math.log1p(high) - math.log1p(low)) / (2 * z)
    return (math.log1p(lift), se) if se > 0 and math.isfinite(se) else None


def shrink_log_lift(
    y: float, se: float, mu: float, tau: float, level: float = 0.95
) -> tuple[float, float, float]:
    """Posterior (relative lift, low, high) of log lift ``y`` (s.e. ``se``) under N(mu, tau²)."""
    b = tau**2 / (tau**2 + se**2) if tau > 0 else 0.0
    mean = mu + b * (y - mu)
    sd = math.sqrt(b) * se
    z = float(sps.norm.ppf(1 - (1 - level) / 2))
    return math.expm1(mean), math.expm1(mean - z * sd), math.expm1(mean + z * sd)
