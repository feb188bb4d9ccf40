"""Bayesian summaries: chance to beat control, chance to be best of all arms, expected loss.

Chance to beat control and its loss come from a Gaussian posterior on the relative lift; chance to
be best and the loss in metric units from per-arm posteriors (beta-binomial for proportions).
"""

from __future__ import annotations

import math

import numpy as np
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


#: Posterior draws per arm for chance-to-be-best and expected loss (seeded: results reproduce).
N_DRAWS = 20_000


def posterior_draws(
    kind: str,
    arms: list[tuple[int, float, float]],
    prior: tuple[float, float] = (1.0, 1.0),
    seed: int = 0,
) -> np.ndarray:
    """Posterior draws (``N_DRAWS`` x arms) of each arm's metric value from ``(n, sum, sum_sq)``.

    Proportions: Beta(a + successes, b + failures), the conjugate beta-binomial posterior with the
    spec's Beta(a, b) prior. Means: N(mean, var / n), the flat-prior Gaussian approximation.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((N_DRAWS, len(arms)))
    for j, (n, total, total_sq) in enumerate(arms):
        if kind == "proportion":
            out[:, j] = rng.beta(prior[0] + total, prior[1] + n - total, size=N_DRAWS)
        else:
            mean = total / n
            var = max(total_sq - n * mean * mean, 0.0) / (n - 1)
            out[:, j] = rng.normal(mean, math.sqrt(var / n), size=N_DRAWS)
    return out


def best_and_loss(
    draws: np.ndarray, higher_is_better: bool = True, control: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per arm: P(best of all arms) and the expected loss of shipping it instead of the control.

    The loss is E[max(0, control - arm)] in the metric's own units (sign flipped for
    lower-is-better metrics).
    """
    signed = draws if higher_is_better else -draws
    best = np.bincount(np.argmax(signed, axis=1), minlength=draws.shape[1]) / draws.shape[0]
    loss = np.maximum(signed[:, [control]] - signed, 0.0).mean(axis=0)
    return best, loss
