"""Power and sample size for the primary metric, on statsmodels' two-proportion power functions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel, ConfigDict
from scipy.stats import norm
from statsmodels.stats.proportion import (
    power_proportions_2indep,
    samplesize_proportions_2indep_onetail,
)

from loopexp.stats.sequential import cs_halfwidth

if TYPE_CHECKING:
    from loopexp.design.spec import ExperimentSpec

PLAN_SCHEMA_VERSION = "1"


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
    sequential: bool = False,
) -> SamplePlan:
    """Recipients per variant to detect a relative lift of ``mde_relative`` over ``baseline``.

    Same formula as R ``power.prop.test`` (pooled SD under H0, unpooled under H1, two-sided). With
    several challengers, alpha is split Bonferroni-style, a conservative stand-in for Holm. The
    metric's denominator is the delivered population: the test needs that many *delivered*
    recipients, so sends are grossed up by ``delivery_rate`` (the spec's
    ``decision.expected_delivery_rate``) and planned power is real power.

    ``sequential``: the always-valid test (:mod:`loopexp.stats.sequential`), tuned at the planned
    total as the spec does by default, must push |z| past its boundary ``c`` there instead of
    z₁₋α/₂ (c ≈ 3.04 against 1.96 at α = 0.05): n = (c + z_power)² (p₁q₁ + p₂q₂) / δ², about 1.9×
    the fixed-horizon n. Planning with the fixed-horizon n would give ~41 % power, not 80 %.
    """
    if not 0 < delivery_rate <= 1:
        raise ValueError(f"delivery_rate must be in (0, 1]; got {delivery_rate}")
    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be in (0, 1), e.g. 0.04 for 4%; got {baseline}")
    treated = baseline * (1 + mde_relative)
    if not 0 < treated < 1:
        raise ValueError(f"baseline x (1 + mde) = {treated:.4f} is not a rate; lower the MDE")
    alpha_each = alpha / max(n_challengers, 1)
    if sequential:
        boundary = sequential_z_boundary(alpha_each, alpha)
        variance = baseline * (1 - baseline) + treated * (1 - treated)
        n = (boundary + float(norm.ppf(power))) ** 2 * variance / (treated - baseline) ** 2
    else:
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


def sequential_z_boundary(alpha: float, design_alpha: float = 0.05) -> float:
    """|z| that an always-valid test must exceed at the sample its mixture is tuned for.

    With the mixture tuned at the look's own total N (Nρ² fixed by ``design_alpha``) the
    boundary does not depend on N: it is the confidence sequence's half-width in standard errors.
    """
    # se = 1 and any N: cs_halfwidth then returns the half-width in standard errors.
    return cs_halfwidth(1.0, 1000.0, alpha, 1000.0, design_alpha)


def guardrail_sample_size(
    baseline: float,
    margin: float,
    alpha: float = 0.05,
    power: float = 0.8,
    true_ratio: float = 1.0,
    delivery_rate: float = 1.0,
) -> int:
    """Sends per variant for a non-inferiority guardrail on a lower-is-better rate to pass.

    One-sided test at ``alpha / 2`` (as :func:`loopexp.analysis.analyze` runs it) of H0: rate ratio
    >=
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


def mde_at(
    baseline: float, n_per_variant: int, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest relative lift over ``baseline`` detected with ``power`` by ``n_per_variant`` each.

    Inverts :func:`power_at` numerically (statsmodels has no closed-form MDE for two proportions);
    None when even the largest possible lift (a rate of 1) is not detectable.
    """
    from scipy.optimize import brentq  # noqa: PLC0415 (only for this inversion)

    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be in (0, 1), e.g. 0.04 for 4%; got {baseline}")
    top = (1 - 1e-9) / baseline - 1
    if power_at(baseline, top, n_per_variant, alpha) < power:
        return None
    return float(
        brentq(lambda m: power_at(baseline, m, n_per_variant, alpha) - power, 1e-9, top, xtol=1e-7)
    )


class ExperimentPlan(BaseModel):
    """A spec's sample size, detectable effect and sending time: the JSON of ``plan_experiment``.

    Serialised as ``plan.json`` (``schema_version`` "1"; extend, never rename a field).
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: str = PLAN_SCHEMA_VERSION
    experiment: str
    campaign: str
    iteration: int
    spec_sha256: str
    primary_metric: str
    baseline: float
    baseline_source: str
    """Where the baseline came from: "given", or the results files of earlier sends it averages."""
    mde_relative: float
    alpha: float
    alpha_per_comparison: float
    power: float
    variants: int
    per_variant: int
    """Recipients each variant needs (the control included)."""
    mailed: int
    """Recipients mailed in all: ``per_variant`` for each variant, weights taken into account."""
    total: int
    """Recipients assigned in all, the no-mail holdout included."""
    recipients_per_day: int | None = None
    days: int | None = None
    """Sending days at ``recipients_per_day`` (then wait a few days for late clicks and orders)."""
    audience_size: int | None = None
    mde_at_audience: float | None = None
    """Smallest relative lift that ``audience_size`` recipients can detect (None: none can)."""
    decision_method: str = "fixed"
    """``fixed`` or ``sequential`` (always-valid, safe at every look: needs more recipients)."""
    fixed_horizon_per_variant: int | None = None
    """For a sequential plan: what a single-look test would need, for comparison."""

    def write_json(self, path: str | Path) -> Path:
        """Write the plan as indented JSON (creating folders) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return path


def plan_experiment(
    spec: ExperimentSpec,
    baseline: float,
    baseline_source: str = "given",
    recipients_per_day: int | None = None,
    audience_size: int | None = None,
) -> ExperimentPlan:
    """Sample size for ``spec``'s decision rule at ``baseline``, with days to send and audience MDE.

    Unequal variant weights are honoured: the smallest-weight variant gets ``per_variant``
    recipients and the others their weight's share more; the holdout comes on top.
    """
    rule = spec.decision
    sizing = plan_for(spec, baseline)  # the delivered population for delivered-based metrics
    sequential = spec.decision_method == "sequential"
    fixed = plan_for(spec, baseline, sequential=False).per_variant if sequential else None
    weights = [v.weight for v in spec.variants]
    mailed = math.ceil(sizing.per_variant * sum(weights) / min(weights))
    total = math.ceil(mailed / (1 - spec.audience.holdout))
    days = math.ceil(total / recipients_per_day) if recipients_per_day else None
    mde_audience = None
    if audience_size:
        mailed_share = (1 - spec.audience.holdout) * min(weights) / sum(weights)
        smallest_arm = int(audience_size * mailed_share)
        if smallest_arm <= 1:
            mde_audience = None
        elif sequential:
            mde_audience = _sequential_mde(spec, baseline, smallest_arm)
        else:
            mde_audience = mde_at(baseline, smallest_arm, sizing.alpha_per_comparison, rule.power)
    return ExperimentPlan(
        experiment=spec.name,
        campaign=spec.campaign,
        iteration=spec.iteration,
        spec_sha256=spec.sha256(),
        primary_metric=spec.primary_metric,
        baseline=baseline,
        baseline_source=baseline_source,
        mde_relative=rule.mde_relative,
        alpha=rule.alpha,
        alpha_per_comparison=sizing.alpha_per_comparison,
        power=rule.power,
        variants=len(spec.variants),
        per_variant=sizing.per_variant,
        mailed=mailed,
        total=total,
        recipients_per_day=recipients_per_day,
        days=days,
        audience_size=audience_size,
        mde_at_audience=mde_audience,
        decision_method=spec.decision_method,
        fixed_horizon_per_variant=fixed,
    )


def _sequential_mde(spec: ExperimentSpec, baseline: float, arm: int) -> float | None:
    """Smallest relative lift a sequential test reaches with ``arm`` recipients per variant."""
    from scipy.optimize import brentq  # noqa: PLC0415 (only for this inversion)

    top = (1 - 1e-9) / baseline - 1

    def excess(mde: float) -> float:
        return plan_for(spec, baseline, mde_relative=mde).per_variant - arm

    if excess(top) > 0:
        return None
    return float(brentq(excess, 1e-6, top, xtol=1e-6))


def plan_for(
    spec: ExperimentSpec,
    baseline: float,
    sequential: bool | None = None,
    mde_relative: float | None = None,
) -> SamplePlan:
    """The sample plan of ``spec``'s primary metric from a baseline rate.

    Uses the spec's alpha, power, MDE, number of challengers, decision method (a sequential test
    needs more recipients) and, for a delivered-based metric, its expected delivery rate.
    """
    rule = spec.decision
    delivered_based = spec.metric(spec.primary_metric).denominator == "delivered"
    if sequential is None:
        sequential = spec.decision_method == "sequential"
    return sample_size_per_variant(
        baseline,
        rule.mde_relative if mde_relative is None else mde_relative,
        rule.alpha,
        rule.power,
        len(spec.challengers),
        delivery_rate=rule.expected_delivery_rate if delivered_based else 1.0,
        sequential=sequential,
    )
