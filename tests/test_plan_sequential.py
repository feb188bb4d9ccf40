"""Planning a sequential (always-valid) test: its sample size reaches the planned power.

An always-valid test must push |z| past its confidence-sequence boundary (≈ 3.04 at α = 0.05
when tuned at the planned total) rather than 1.96, so it needs ≈ 1.9× the fixed-horizon sample.
Checked by simulation with the test the analysis uses, not against our own formula.
"""

from __future__ import annotations

import numpy as np
import pytest

from loopexp import analyze, load_spec
from loopexp.design.plan import (
    plan_experiment,
    plan_for,
    sample_size_per_variant,
    sequential_z_boundary,
)
from loopexp.design.spec import ExperimentSpec
from loopexp.learn.iteration import next_spec
from loopexp.metrics.engine import GroupStats, MetricTable
from loopexp.stats.sequential import always_valid_pvalues, sequential_proportions
from tests.conftest import DEMO_SPEC, ROOT

WELCOME = ROOT / "experiments" / "welcome_flow.yaml"
SIMS = 4000


def _power(n: int, p_c: float, p_t: float, seed: int) -> float:
    """Share of simulated campaigns whose always-valid p at n per arm is below 0.05."""
    rng = np.random.default_rng(seed)
    x_c, x_t = rng.binomial(n, p_c, SIMS), rng.binomial(n, p_t, SIMS)
    r_c, r_t = x_c / n, x_t / n
    se = np.sqrt((r_c * (1 - r_c) + r_t * (1 - r_t)) / n)
    p = always_valid_pvalues((r_t - r_c) / se, np.full(SIMS, 2.0 * n), tuning_n=2.0 * n)
    return float(np.mean(p < 0.05))


def test_vectorised_p_values_are_the_analysis_test() -> None:
    n = 30_000
    effect = sequential_proportions(1_290, n, 1_200, n, tuning_n=2 * n)
    r_c, r_t = 1_200 / n, 1_290 / n
    z = (r_t - r_c) / np.sqrt((r_c * (1 - r_c) + r_t * (1 - r_t)) / n)
    vec = always_valid_pvalues(np.array([z]), np.array([2.0 * n]), tuning_n=2.0 * n)[0]
    assert vec == pytest.approx(effect.p_value, rel=1e-9)


@pytest.mark.parametrize(("baseline", "mde"), [(0.04, 0.10), (0.20, 0.05)])
def test_sequential_plan_reaches_its_power_and_the_fixed_one_does_not(baseline, mde) -> None:
    seq = sample_size_per_variant(baseline, mde, 0.05, 0.8, sequential=True)
    fixed = sample_size_per_variant(baseline, mde, 0.05, 0.8)
    assert 1.8 < seq.per_variant / fixed.per_variant < 2.0
    p_t = baseline * (1 + mde)
    # 4,000 simulations: Monte-Carlo SE of a power near 0.8 is 0.006
    assert _power(seq.per_variant, baseline, p_t, seed=1) == pytest.approx(0.80, abs=0.025)
    # planning a sequential test with the fixed-horizon n leaves it badly under-powered
    assert _power(fixed.per_variant, baseline, p_t, seed=2) == pytest.approx(0.41, abs=0.04)


def test_boundary_grows_with_the_bonferroni_share() -> None:
    assert sequential_z_boundary(0.05) == pytest.approx(3.0352, abs=1e-4)
    assert sequential_z_boundary(0.025) > sequential_z_boundary(0.05)


def test_plan_of_a_sequential_spec_says_so_and_compares_with_fixed() -> None:
    spec = load_spec(WELCOME)
    assert spec.decision_method == "sequential"
    plan = plan_experiment(spec, 0.04, audience_size=400_000)
    assert plan.decision_method == "sequential"
    assert plan.fixed_horizon_per_variant is not None
    assert 1.8 < plan.per_variant / plan.fixed_horizon_per_variant < 2.0
    # the audience's detectable lift is the sequential one: at the planned n it is the spec's MDE
    at_plan = plan_experiment(spec, 0.04, audience_size=int(plan.total * 1.0001))
    assert at_plan.mde_at_audience == pytest.approx(spec.decision.mde_relative, rel=0.01)


def test_next_spec_replans_a_sequential_campaign_as_sequential() -> None:
    data = load_spec(DEMO_SPEC).model_dump(mode="json")
    data["decision"]["method"] = "sequential"
    spec = ExperimentSpec.model_validate(data)
    stats = [
        GroupStats(metric, v.id, "all", 5_000, 250.0, 250.0)
        for v in spec.variants
        for metric in spec.all_metrics
    ]
    assigned = {v.id: 5_000 for v in spec.variants}
    table = MetricTable(stats=stats, assigned=assigned, events=1, quarantined=0)
    following = next_spec(spec, analyze(spec, table), baseline=0.05)
    assert following.decision_method == "sequential"
    planned = following.planned_recipients_per_variant
    assert planned == plan_for(following, 0.05).per_variant
    # two challengers (alpha 0.025 each): ((3.28 + 0.84) / (2.24 + 0.84))² ≈ 1.79
    assert planned > 1.7 * plan_for(following, 0.05, sequential=False).per_variant


def test_plan_summary_says_why_a_sequential_test_needs_more() -> None:
    from loopexp.report.views import plan_summary

    plan = plan_experiment(load_spec(WELCOME), 0.04)
    text = plan_summary(plan)
    assert "sequential" in text and f"{plan.fixed_horizon_per_variant:,} per variant" in text
    assert "sequential" not in plan_summary(plan_experiment(load_spec(DEMO_SPEC), 0.04))
