"""Simulation-based calibration of loopexp's tests, intervals, sample sizes and decision rule.

Each test simulates data whose truth is known (seeded numpy, so results are reproducible) and checks
an operating characteristic: false-positive rate, interval coverage, power, family-wise error of the
decision. The tolerance is ``K_SE`` binomial standard errors of the simulated share around its
nominal value; at that width a correct implementation fails with probability ~1e-4 for a random
seed, while the errors these tests exist to catch (no multiplicity correction, a wrong SE, a
one-sided/two-sided mix-up, an off-by-a-factor sample size) move the share by far more.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path

import numpy as np
import pytest

from loopexp.analysis.analyze import analyze
from loopexp.analysis.results import Status
from loopexp.design.plan import sample_size_per_variant
from loopexp.design.spec import ExperimentSpec, load_spec
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats, MetricTable
from loopexp.stats import compare_means, compare_proportions

DEMO_SPEC = Path(__file__).resolve().parent.parent / "experiments" / "subject_line_demo.yaml"
ALPHA = 0.05
K_SE = 4.0


def tolerance(p: float, n_sims: int, k: float = K_SE) -> float:
    """``k`` binomial standard errors of a share with true value ``p`` over ``n_sims`` draws."""
    return k * math.sqrt(p * (1 - p) / n_sims)


def _proportion_effects(rng, n_sims, n, p_control, p_treatment, alpha=ALPHA):
    x_c = rng.binomial(n, p_control, size=n_sims)
    x_t = rng.binomial(n, p_treatment, size=n_sims)
    return [
        compare_proportions(int(t), n, int(c), n, alpha=alpha)
        for t, c in zip(x_t, x_c, strict=True)
    ]


def test_aa_false_positive_rate_of_compare_proportions():
    """A/A: 4000 pairs of Binomial(5000, 0.04); the pooled z-test rejects at alpha 0.05 in
    5% +- 4 SE (1.4 pp) of them, and at alpha 0.01 in 1% +- 4 SE."""
    rng = np.random.default_rng(20240501)
    n_sims = 4000
    effects = _proportion_effects(rng, n_sims, 5000, 0.04, 0.04)
    p = np.array([e.p_value for e in effects])
    for alpha in (0.05, 0.01):
        rate = float(np.mean(p < alpha))
        assert abs(rate - alpha) <= tolerance(alpha, n_sims), (alpha, rate)
    # Both directions are rejected about equally (a one-sided test would put all in one tail).
    est = np.array([e.estimate for e in effects])
    up, down = np.mean((p < ALPHA) & (est > 0)), np.mean((p < ALPHA) & (est < 0))
    assert abs(up - ALPHA / 2) <= tolerance(ALPHA / 2, n_sims), up
    assert abs(down - ALPHA / 2) <= tolerance(ALPHA / 2, n_sims), down


def test_wald_and_relative_ci_coverage_under_true_effect():
    """Under a true +10% lift (0.040 -> 0.044, n = 5000 per arm, 4000 sims) the 95% Wald CI
    covers the true absolute difference in 95% +- 4 SE of simulations; the delta-method relative
    CI covers the true relative lift (0.10) at the same rate."""
    rng = np.random.default_rng(7)
    n_sims, p_c, p_t = 4000, 0.040, 0.044
    effects = _proportion_effects(rng, n_sims, 5000, p_c, p_t)
    abs_cover = np.mean([e.ci_low <= p_t - p_c <= e.ci_high for e in effects])
    rel_cover = np.mean([e.rel_ci_low <= p_t / p_c - 1 <= e.rel_ci_high for e in effects])
    assert abs(abs_cover - 0.95) <= tolerance(0.95, n_sims), abs_cover
    assert abs(rel_cover - 0.95) <= tolerance(0.95, n_sims), rel_cover


def test_power_at_planned_sample_size():
    """At n = sample_size_per_variant(0.04, 0.10, alpha 0.05, power 0.8) per arm, a true +10% lift
    is detected (p < 0.05 with a positive estimate) in 80% +- 4 SE of 3000 simulations."""
    plan = sample_size_per_variant(0.04, 0.10, alpha=ALPHA, power=0.8)
    rng = np.random.default_rng(11)
    n_sims = 3000
    effects = _proportion_effects(rng, n_sims, plan.per_variant, 0.04, 0.044)
    rate = float(np.mean([e.p_value < ALPHA and e.estimate > 0 for e in effects]))
    assert abs(rate - 0.8) <= tolerance(0.8, n_sims), (plan.per_variant, rate)


def test_welch_aa_false_positive_rate_on_lognormal_data():
    """A/A on skewed data: two arms of 1000 LogNormal(0, 1) values (skewness ~6), 4000 sims; the
    Welch test on (n, sum, sum of squares) rejects at alpha 0.05 in 5% +- 4 SE of them."""
    rng = np.random.default_rng(3)
    n_sims, n = 4000, 1000
    rejections = 0
    for _ in range(n_sims):
        a = rng.lognormal(0.0, 1.0, size=n)
        b = rng.lognormal(0.0, 1.0, size=n)
        e = compare_means(n, a.sum(), (a * a).sum(), n, b.sum(), (b * b).sum())
        rejections += e.p_value < ALPHA
    rate = rejections / n_sims
    assert abs(rate - ALPHA) <= tolerance(ALPHA, n_sims), rate


@pytest.fixture
def primary_only_spec() -> ExperimentSpec:
    """The demo spec (control + 2 challengers, Holm, alpha 0.05) with only its primary metric.

    Secondary metrics and the unsubscribe guardrail are dropped: the decision's family is the
    primary metric across challengers, and a guardrail could only veto (lower the ship rate).
    """
    spec = load_spec(DEMO_SPEC)
    spec = ExperimentSpec.model_validate(
        spec.model_dump() | {"secondary_metrics": [], "guardrails": []}
    )
    assert spec.all_metrics == ["click_rate"]
    assert len(spec.challengers) == 2
    assert spec.decision.correction == "holm" and spec.decision.alpha == ALPHA
    return spec


def test_decision_aa_ship_rate_and_familywise_error(primary_only_spec, monkeypatch):
    """Decision-level A/A through loopexp.analysis.analyze.analyze: three arms of Binomial(5000,
    0.04)
    clicks, 2000 simulations.

    * "ship" is decided in at most 5% + 4 SE of them;
    * the family-wise error on the primary metric (any challenger with Holm-adjusted p < alpha,
      either direction) is at most 5% + 4 SE;
    * sensitivity of this design: the unadjusted "any raw p < alpha" rate of the same simulations
      is well above 5% + 4 SE (~10% for two comparisons sharing a control), so a missing or
      broken correction would fail the family-wise check. (The ship check alone could not catch
      that: ship needs a significant *positive* lift, so even uncorrected it stays near 4-5%.)
    """
    # statsmodels' multipletests(method="holm") runs gc.collect() on every call (~0.1 s in this
    # process); skipping the explicit collection changes no result and keeps the file fast.
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)
    spec = primary_only_spec
    rng = np.random.default_rng(2024)
    n_sims, n, p = 2000, 5000, 0.04
    ids = [v.id for v in spec.variants]
    clicks = rng.binomial(n, p, size=(n_sims, len(ids)))
    ship = fwer_adjusted = any_raw = 0
    for row in clicks:
        table = MetricTable(
            stats=[
                GroupStats("click_rate", vid, ALL_SEGMENTS, n, float(x), float(x))
                for vid, x in zip(ids, row, strict=True)
            ],
            assigned=dict.fromkeys(ids, n),
            events=0,
            quarantined=0,
        )
        res = analyze(spec, table)
        primary = [c for c in res.comparisons if c.metric == spec.primary_metric]
        assert len(primary) == 2
        assert res.srm.ok
        ship += res.decision.status == Status.SHIP
        fwer_adjusted += any(c.p_value_adjusted < ALPHA for c in primary)
        any_raw += any(c.p_value < ALPHA for c in primary)
    bound = ALPHA + tolerance(ALPHA, n_sims)
    assert ship / n_sims <= bound, ship / n_sims
    assert fwer_adjusted / n_sims <= bound, fwer_adjusted / n_sims
    assert any_raw / n_sims > bound, any_raw / n_sims
