"""Off-policy value of a deterministic policy from logged, randomised sends: AIPW, IPW, DM.

Our own few lines of numpy rather than a library's: the packaged off-policy libraries are either
abandoned or pin old scientific stacks (obp: scikit-learn 1.0.2, Python < 3.10; see
reference/policies.md), and with the assignment's *known* propensities the estimators are one line
each. For a policy π, per recipient i with logged action a_i, propensity p_i = P(a_i | x_i), outcome
y_i and cross-fitted outcome model μ̂(x, a):

- direct method (DM): μ̂(x_i, π(x_i));
- inverse propensity (IPW): 1{a_i = π(x_i)} · y_i / p_i — unbiased with known p, noisy;
- doubly robust (AIPW): DM + 1{a_i = π(x_i)} · (y_i − μ̂(x_i, a_i)) / p_i — unbiased with known p
  whatever μ̂ is, and as precise as a good μ̂ allows.

The value is the mean of the per-recipient scores and its interval the CLT one on those scores; the
gain of one policy over another is the mean of the paired score differences, with its own CLT
interval (the two scores of a recipient are correlated, so the paired interval is much narrower
than two separate ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from loopexp.core.errors import InputError


class PolicyError(InputError):
    """Inputs from which a policy cannot be learned or valued (the message says what to do)."""


@dataclass(frozen=True)
class Estimate:
    """A mean of per-recipient scores with its CLT interval."""

    value: float
    se: float
    ci_low: float
    ci_high: float
    n: int

    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or below 0 (a zero-width one never does)."""
        return self.se > 0 and (self.ci_low > 0 or self.ci_high < 0)


def mean_interval(scores: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Mean of ``scores`` with the two-sided (1 − alpha) normal interval (CLT on the scores)."""
    scores = np.asarray(scores, dtype=float)
    n = scores.size
    if n < 2 or not np.isfinite(scores).all():
        raise PolicyError(
            f"{n} finite per-recipient score(s): a policy value needs at least 2 recipients with "
            "an outcome, an action and a propensity in (0, 1]"
        )
    mean = float(scores.mean())
    se = float(scores.std(ddof=1) / np.sqrt(n))
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return Estimate(mean, se, mean - z * se, mean + z * se, n)


def check_logged(action: np.ndarray, propensity: np.ndarray, y: np.ndarray) -> None:
    """Refuse logged data the estimators cannot use: lengths, propensities outside (0, 1]."""
    if not (len(action) == len(propensity) == len(y)):
        raise PolicyError(
            f"actions ({len(action)}), propensities ({len(propensity)}) and outcomes ({len(y)}) "
            "must have one value per recipient"
        )
    bad = ~((propensity > 0) & (propensity <= 1))
    if bad.any():
        raise PolicyError(
            f"{int(bad.sum())} recipient(s) have a propensity outside (0, 1] (first: "
            f"{propensity[bad][0]!r}); the assignment's `propensity` column must be the "
            "probability with which the recipient's own variant was drawn"
        )


def dm_scores(mu: np.ndarray, policy_action: np.ndarray) -> np.ndarray:
    """Direct-method scores μ̂(x_i, π(x_i)); ``mu`` is n × actions."""
    return mu[np.arange(len(policy_action)), policy_action]


def ipw_scores(
    y: np.ndarray, action: np.ndarray, propensity: np.ndarray, policy_action: np.ndarray
) -> np.ndarray:
    """Inverse-propensity scores 1{a_i = π(x_i)} · y_i / p_i."""
    return np.where(action == policy_action, y / propensity, 0.0)


def aipw_scores(
    y: np.ndarray,
    action: np.ndarray,
    propensity: np.ndarray,
    mu: np.ndarray,
    policy_action: np.ndarray,
) -> np.ndarray:
    """Doubly robust scores μ̂(x_i, π_i) + 1{a_i = π_i} · (y_i − μ̂(x_i, a_i)) / p_i."""
    rows = np.arange(len(action))
    residual = (y - mu[rows, action]) / propensity
    return mu[rows, policy_action] + np.where(action == policy_action, residual, 0.0)


def aipw_matrix(
    y: np.ndarray, action: np.ndarray, propensity: np.ndarray, mu: np.ndarray
) -> np.ndarray:
    """AIPW score of every recipient under every action (n × actions): what policies learn from."""
    gamma = mu.copy()
    rows = np.arange(len(action))
    gamma[rows, action] += (y - mu[rows, action]) / propensity
    return gamma


def planned_recipients(gain: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Recipients for a two-sided ``alpha`` test of a policy gain to have ``power``.

    ``sd``: standard deviation of the per-recipient paired score difference (from a pilot or an
    earlier send); ``gain``: the gain worth finding. n = ((z₁₋α/₂ + z_power) · sd / gain)².
    """
    if gain <= 0 or sd <= 0:
        raise PolicyError(f"a sample plan needs a positive gain and sd; got {gain}, {sd}")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return int(np.ceil((z * sd / gain) ** 2))


@dataclass(frozen=True)
class PolicyCell:
    """A group of recipients (a segment, a tree leaf) for planning a policy send.

    ``share`` of the audience; ``gain``: per-recipient gain of the arm the policy would give them
    over the single arm (negative where the single arm is better); ``sd``: standard deviation of
    their per-recipient paired score difference (personalised − single arm), from a pilot.
    """

    share: float
    gain: float
    sd: float


def policy_power(
    n: int,
    cells: Sequence[PolicyCell],
    folds: int = 5,
    alpha: float = 0.05,
    candidates: int = 2,
    draws: int = 4000,
) -> float:
    """Power of the sequential cross-fitted procedure to find a policy's gain with ``n`` recipients.

    The procedure (:mod:`.evaluate`) scores chunk k = 2..K under the rules learned on chunks 1..k−1
    and tests the stacked paired gain one-sided at α/(2·candidates). A learned per-cell rule takes
    the personalised arm when its training mean difference is above 0; the training sets are
    nested, so per cell the decisions of successive chunks follow one Gaussian random walk of the
    chunks' difference sums, whose later steps are also the scores evaluated. Simulating that walk
    (``draws`` times, seeded, the same normals for every n so the power rises with n) gives the
    power with the cost of learning in it: 1/K of the recipients only teach, rules learned on
    few recipients are sometimes wrong, the Bonferroni level, and the gain shown over both fixed
    arms (over the other arm it is the cells the rules keep on the single arm that count, often the
    noisier comparison). Two arms: the single one and, per cell, the alternative.
    """
    share = np.array([c.share for c in cells], dtype=float)
    gain = np.array([c.gain for c in cells], dtype=float)
    sd = np.array([c.sd for c in cells], dtype=float)
    chunk = n / folds
    z = np.random.default_rng(0).standard_normal((draws, folds, len(cells)))
    sums = share * chunk * gain + np.sqrt(share * chunk) * sd * z  # draws × chunks × cells
    learned = np.cumsum(sums, axis=1)[:, :-1] > 0  # chunk k's rule, from chunks < k
    scored = sums[:, 1:]
    evaluated = n * (folds - 1) / folds
    second = share * chunk * (sd**2 + gain**2)  # E[d²] of a cell's chunk, times its recipients
    crit = NormalDist().inv_cdf(1 - alpha / (2 * max(1, candidates)))

    def shown(picked: np.ndarray, sign: float) -> np.ndarray:
        estimate = (picked * sign * scored).sum(axis=(1, 2)) / evaluated
        variance = (picked * second).sum(axis=(1, 2)) / evaluated**2 - estimate**2 / evaluated
        return estimate / np.sqrt(np.maximum(variance, 1e-300)) > crit

    # Over the single arm (the cells the rules move) and over the other arm (the cells they
    # keep): the gain must be shown over every fixed arm (evaluate's intersection-union test).
    return float(np.mean(shown(learned, 1.0) & shown(~learned, -1.0)))


def planned_policy_recipients(
    cells: Sequence[PolicyCell],
    folds: int = 5,
    alpha: float = 0.05,
    power: float = 0.8,
    candidates: int = 2,
) -> int:
    """Recipients for the policy procedure to find the cells' gain with ``power``.

    The smallest n whose :func:`policy_power` reaches ``power``; never below the oracle plan
    (:func:`planned_recipients` for the best per-cell policy, known in advance, at α/candidates).
    """
    if not cells or not any(c.gain > 0 for c in cells) or any(c.sd <= 0 for c in cells):
        raise PolicyError(
            "a policy plan needs cells with positive sds and at least one positive gain"
        )
    total = sum(c.share for c in cells)
    oracle = sum(c.share * max(c.gain, 0.0) for c in cells) / total
    sd = np.sqrt(sum(c.share * c.sd**2 for c in cells if c.gain > 0) / total)
    low = planned_recipients(oracle, float(sd), alpha / max(1, candidates), power)
    if policy_power(low, cells, folds, alpha, candidates) >= power:
        return low
    high = low
    while policy_power(high, cells, folds, alpha, candidates) < power:
        high *= 2
        if high > 10**10:
            raise PolicyError("no sample up to 10 billion recipients finds this gain")
    while high - low > max(1, low // 1000):
        mid = (low + high) // 2
        low, high = (
            (mid, high)
            if policy_power(mid, cells, folds, alpha, candidates) < power
            else (low, mid)
        )
    return int(high)
