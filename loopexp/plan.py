"""Power and sample size for the primary metric, on statsmodels' two-proportion power functions."""

from __future__ import annotations

import math
from typing import NamedTuple

from statsmodels.stats.proportion import (
    power_proportions_2indep,
    samplesize_proportions_2indep_onetail,
)


class SamplePlan(NamedTuple):
    """How many recipients each variant needs.

    Attributes:
        baseline: control rate assumed.
        mde_relative: smallest relative lift to detect.
        alpha_per_comparison: significance level per comparison (Bonferroni over challengers).
        power: probability of detecting a true lift of ``mde_relative``.
        per_variant: recipients to *send* per variant (rounded up): the delivered population the
            test needs, divided by the expected delivery rate.
        total: recipients over all variants.
        delivered_per_variant: delivered recipients per variant the test needs (the denominator
            of delivered-based metrics such as click_rate).
        delivery_rate: expected share of sends delivered.
    """

    baseline: float
    mde_relative: float
    alpha_per_comparison: float
    power: float
    per_variant: int
    total: int
    delivered_per_variant: int = 0
    delivery_rate: float = 1.0


def sample_size_per_variant(
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    power: float = 0.8,
    n_challengers: int = 1,
    delivery_rate: float = 1.0,
) -> SamplePlan:
    """Recipients per variant to detect a relative lift of ``mde_relative`` over ``baseline``.

    Same formula as R ``power.prop.test`` (pooled SD under H0, unpooled under H1, two-sided). With
    several challengers, alpha is split Bonferroni-style, a conservative stand-in for Holm. The
    metric's denominator is the delivered population: the test needs that many *delivered*
    recipients, so sends are grossed up by ``delivery_rate`` (the spec's
    ``decision.expected_delivery_rate``) and planned power is real power.
    """
    if not 0 < delivery_rate <= 1:
        raise ValueError(f"delivery_rate must be in (0, 1]; got {delivery_rate}")
    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be in (0, 1); got {baseline}")
    treated = baseline * (1 + mde_relative)
    if not 0 < treated < 1:
        raise ValueError(f"baseline x (1 + mde) = {treated:.4f} is not a rate; lower the MDE")
    alpha_each = alpha / max(n_challengers, 1)
    n = samplesize_proportions_2indep_onetail(
        treated - baseline, baseline, power, alpha=alpha_each, alternative="two-sided"
    )
    delivered = math.ceil(n)
    per_variant = math.ceil(delivered / delivery_rate)
    return SamplePlan(
        baseline,
        mde_relative,
        alpha_each,
        power,
        per_variant,
        per_variant * (n_challengers + 1),
        delivered,
        delivery_rate,
    )


def guardrail_sample_size(
    baseline: float,
    margin: float,
    alpha: float = 0.05,
    power: float = 0.8,
    true_ratio: float = 1.0,
    delivery_rate: float = 1.0,
) -> int:
    """Sends per variant for a non-inferiority guardrail on a lower-is-better rate to pass.

    One-sided test at ``alpha / 2`` (as :func:`loopexp.analyze` runs it) of H0: rate ratio >=
    1 + margin, when the true ratio is ``true_ratio``; normal approximation on the log ratio,
    n = (z_{1-alpha/2} + z_{power})² (1/p_t - 1 + 1/p_c - 1) / log((1 + margin)/true_ratio)².
    """
    if not margin > 0 or true_ratio >= 1 + margin:
        raise ValueError("need margin > 0 and a true ratio below 1 + margin")
    from scipy import stats as sps  # noqa: PLC0415

    p_c, p_t = baseline, baseline * true_ratio
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = z**2 * ((1 - p_t) / p_t + (1 - p_c) / p_c) / math.log((1 + margin) / true_ratio) ** 2
    return math.ceil(math.ceil(n) / delivery_rate)


def power_at(
    baseline: float, mde_relative: float, n_per_variant: int, alpha: float = 0.05
) -> float:
    """Power of the two-sided test with ``n_per_variant`` recipients per arm."""
    treated = baseline * (1 + mde_relative)
    result = power_proportions_2indep(
        treated - baseline, baseline, n_per_variant, alpha=alpha, alternative="two-sided"
    )
    return float(result.power)
