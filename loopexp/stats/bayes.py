"""Chance to beat control and expected loss, from a Gaussian posterior on the relative lift."""

from __future__ import annotations

import math

from scipy import stats as sps


def chance_to_beat(
    rel_lift: float, rel_se: float, higher_is_better: bool = True
) -> tuple[float, float]:
    """Return ``(P(challenger better), expected loss of shipping it)`` in relative-lift units.

    The posterior of the relative lift is N(rel_lift, rel_se²) (flat prior; as gbstats'
    ``EffectBayesianABTest``). The expected loss is E[max(0, -Δ)] for a higher-is-better metric,
    E[max(0, Δ)] otherwise: closed form ``se·φ(z) - d·Φ(-z)`` with d the lift in the good direction.
    """
    if not (math.isfinite(rel_lift) and math.isfinite(rel_se)) or rel_se <= 0:
        return float("nan"), float("nan")
    d = rel_lift if higher_is_better else -rel_lift
    z = d / rel_se
    prob = float(sps.norm.cdf(z))
    loss = float(rel_se * sps.norm.pdf(z) - d * sps.norm.cdf(-z))
    return prob, loss


def credible_interval(rel_lift: float, rel_se: float, alpha: float = 0.05) -> tuple[float, float]:
    """Equal-tailed ``1 - alpha`` credible interval of the relative lift (same posterior)."""
    z = float(sps.norm.ppf(1 - alpha / 2))
    return rel_lift - z * rel_se, rel_lift + z * rel_se
