"""Power and sample size for the primary metric, on statsmodels' two-proportion power functions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel, ConfigDict
from statsmodels.stats.proportion import (
    power_proportions_2indep,
    samplesize_proportions_2indep_onetail,
)

if TYPE_CHECKING:
    from loopexp.spec import ExperimentSpec

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
        raise ValueError(f"baseline rate must be in (0, 1), e.g. 0.04 for 4%; got {baseline}")
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

    def write_json(self, path: str | Path) -> Path:
        """Write the plan as indented JSON (creating folders) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return path


def baseline_from_history(spec: ExperimentSpec, results_paths: list[str | Path]) -> float:
    """The control rate of ``spec``'s primary metric pooled over earlier sends' ``results.json``.

    Pooled (total numerator / total denominator), so a big send weighs more than a small one.
    """
    from loopexp.results import ExperimentResults  # noqa: PLC0415 (pandas-heavy, only here)

    if not results_paths:
        raise ValueError("no results.json of earlier sends given")
    numerator = denominator = 0.0
    for path in results_paths:
        results = ExperimentResults.read_json(path)
        control = next((v for v in results.variants if v.is_control), None)
        value = control.metrics.get(spec.primary_metric) if control else None
        if value is None:
            raise ValueError(f"{path}: the control has no {spec.primary_metric}; pick other sends")
        numerator += value.numerator
        denominator += value.denominator
    if denominator == 0 or not 0 < numerator / denominator < 1:
        raise ValueError(
            f"{spec.primary_metric} of the earlier controls is {numerator:g}/{denominator:g}: "
            "not a usable baseline rate; give one with baseline_rate"
        )
    return numerator / denominator


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
    weights = [v.weight for v in spec.variants]
    mailed = math.ceil(sizing.per_variant * sum(weights) / min(weights))
    total = math.ceil(mailed / (1 - spec.audience.holdout))
    days = math.ceil(total / recipients_per_day) if recipients_per_day else None
    mde_audience = None
    if audience_size:
        mailed_share = (1 - spec.audience.holdout) * min(weights) / sum(weights)
        smallest_arm = int(audience_size * mailed_share)
        mde_audience = (
            mde_at(baseline, smallest_arm, sizing.alpha_per_comparison, rule.power)
            if smallest_arm > 1
            else None
        )
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
    )


def plan_for(spec: ExperimentSpec, baseline: float) -> SamplePlan:
    """The sample plan of ``spec``'s primary metric from a baseline rate.

    Uses the spec's alpha, power, MDE, number of challengers and, for a delivered-based metric,
    its expected delivery rate.
    """
    rule = spec.decision
    delivered_based = spec.metric(spec.primary_metric).denominator == "delivered"
    return sample_size_per_variant(
        baseline,
        rule.mde_relative,
        rule.alpha,
        rule.power,
        len(spec.challengers),
        delivery_rate=rule.expected_delivery_rate if delivered_based else 1.0,
    )
