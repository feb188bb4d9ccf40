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
        per_variant: recipients per variant (rounded up).
        total: recipients over all variants.
    """

    baseline: float
    mde_relative: float
    alpha_per_comparison: float
    power: float
    per_variant: int
    total: int


def sample_size_per_variant(
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    power: float = 0.8,
    n_challengers: int = 1,
) -> SamplePlan:
    """Recipients per variant to detect a relative lift of ``mde_relative`` over ``baseline``.

    Same formula as R ``power.prop.test`` (pooled SD under H0, unpooled under H1, two-sided). With
    several challengers, alpha is split Bonferroni-style, a conservative stand-in for Holm.
    """
    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be in (0, 1); got {baseline}")
    treated = baseline * (1 + mde_relative)
    if not 0 < treated < 1:
        raise ValueError(f"baseline x (1 + mde) = {treated:.4f} is not a rate; lower the MDE")
    alpha_each = alpha / max(n_challengers, 1)
    n = samplesize_proportions_2indep_onetail(
        treated - baseline, baseline, power, alpha=alpha_each, alternative="two-sided"
    )
    per_variant = math.ceil(n)
    return SamplePlan(
        baseline, mde_relative, alpha_each, power, per_variant, per_variant * (n_challengers + 1)
    )


def power_at(
    baseline: float, mde_relative: float, n_per_variant: int, alpha: float = 0.05
) -> float:
    """Power of the two-sided test with ``n_per_variant`` recipients per arm."""
    treated = baseline * (1 + mde_relative)
    result = power_proportions_2indep(
        treated - baseline, baseline, n_per_variant, alpha=alpha, alternative="two-sided"
    )
    return float(result.power)
