"""Regression adjustment from sufficient statistics against statsmodels OLS, on Hillstrom and
simulated data; A/A calibration of the adjusted test.

The sufficient statistics are aggregated in DuckDB here (the engine's job), so the test also shows
that nothing per-recipient is needed by :mod:`loopexp.stats.adjustment`.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest
import statsmodels.api as sm

from loopexp.sim.datasets import load_hillstrom
from loopexp.stats import compare_means
from loopexp.stats.adjustment import Moments, cuped, regression_adjusted

COVARIATES = ["history", "mens", "womens", "newbie"]


def _duckdb_moments(frame, arm: str, outcome: str, covariates: list[str]) -> Moments:
    """n, Σy, Σy², Σx, Σxxᵀ, Σxy of one arm, aggregated in SQL."""
    k = len(covariates)
    cols = ["count(*)", f"sum({outcome})::DOUBLE", f"sum({outcome}::DOUBLE * {outcome})"]
    cols += [f"sum({c})::DOUBLE" for c in covariates]
    cols += [f"sum({a}::DOUBLE * {b})" for a in covariates for b in covariates]
    cols += [f"sum({c}::DOUBLE * {outcome})" for c in covariates]
    with duckdb.connect() as con:
        con.register("h", frame)
        row = con.execute(f"SELECT {', '.join(cols)} FROM h WHERE segment = ?", [arm]).fetchone()
    return Moments.from_sums(
        row[0], row[1], row[2], row[3 : 3 + k], row[3 + k : 3 + k + k * k], row[3 + k + k * k :]
    )


@pytest.fixture(scope="module")
def hillstrom():
    frame = load_hillstrom()
    frame["segment"] = frame["segment"].astype(str)
    return frame


def _statsmodels_reference(frame, arm_t: str, arm_c: str, outcome: str, covariates: list[str]):
    """Coefficient of T in OLS y ~ T * (X - x̄); per-arm classical intercept SEs; HC2 SE."""
    data = frame[frame["segment"].isin([arm_t, arm_c])]
    x = data[covariates].to_numpy(dtype=float)
    xc = x - x.mean(axis=0)
    t = (data["segment"] == arm_t).to_numpy(dtype=float)[:, None]
    y = data[outcome].to_numpy(dtype=float)
    design = np.column_stack([np.ones(len(y)), t, xc, t * xc])
    interacted = sm.OLS(y, design).fit()
    hc2 = sm.OLS(y, design).fit(cov_type="HC2")
    per_arm_var = 0.0
    for mask in (t[:, 0] == 1, t[:, 0] == 0):
        fit = sm.OLS(y[mask], np.column_stack([np.ones(mask.sum()), xc[mask]])).fit()
        per_arm_var += fit.bse[0] ** 2
    return interacted.params[1], math.sqrt(per_arm_var), hc2.bse[1]


@pytest.mark.parametrize("outcome", ["spend", "visit", "conversion"])
@pytest.mark.parametrize("arm", ["Mens E-Mail", "Womens E-Mail"])
def test_hillstrom_adjusted_estimate_and_se_equal_statsmodels_ols(hillstrom, outcome, arm):
    t = _duckdb_moments(hillstrom, arm, outcome, COVARIATES)
    c = _duckdb_moments(hillstrom, "No E-Mail", outcome, COVARIATES)
    out = regression_adjusted(t, c)
    coef, se_ref, se_hc2 = _statsmodels_reference(hillstrom, arm, "No E-Mail", outcome, COVARIATES)
    assert out.effect.estimate == pytest.approx(coef, rel=1e-6, abs=1e-9)
    assert out.se == pytest.approx(se_ref, rel=1e-6)
    # The HC2 sandwich (needs fourth moments) agrees to well under 1% on 42,000 rows.
    assert out.se == pytest.approx(se_hc2, rel=5e-3)
    # The unadjusted SE is Welch's.
    plain = compare_means(t.n, t.sum_y, t.sum_y2, c.n, c.sum_y, c.sum_y2)
    assert out.se_unadjusted == pytest.approx((plain.ci_high - plain.estimate) / 1.96, rel=1e-3)
    assert 0 <= out.ci_narrowing < 0.2


def test_hillstrom_cuped_on_history_matches_statsmodels(hillstrom):
    t = _duckdb_moments(hillstrom, "Mens E-Mail", "spend", ["history"])
    c = _duckdb_moments(hillstrom, "No E-Mail", "spend", ["history"])
    out = cuped(t, c)
    coef, se_ref, _ = _statsmodels_reference(
        hillstrom, "Mens E-Mail", "No E-Mail", "spend", ["history"]
    )
    assert out.effect.estimate == pytest.approx(coef, rel=1e-6)
    assert out.se == pytest.approx(se_ref, rel=1e-6)
    assert out.effect.ci_low < out.effect.estimate < out.effect.ci_high


def test_engagement_history_narrows_the_click_interval_a_lot():
    """Simulated e-mail data (persistent engagement, 90 days of history): the pre-period clicks
    and opens explain much of who clicks, so the interval narrows by far more than on Hillstrom."""
    rng = np.random.default_rng(5)
    arms = []
    for _ in range(2):
        e = rng.beta(0.25, 2.5, 20_000)
        x = np.column_stack([rng.binomial(12, e), rng.binomial(12, np.minimum(3 * e, 1))])
        arms.append(Moments.from_arrays((rng.random(20_000) < e).astype(float), x))
    out = regression_adjusted(arms[1], arms[0])
    assert out.ci_narrowing > 0.12
    assert out.variance_reduction == pytest.approx(1 - (1 - out.ci_narrowing) ** 2)


def test_moments_pool_and_errors():
    rng = np.random.default_rng(1)
    y, x = rng.normal(size=50), rng.normal(size=(50, 2))
    a, b = Moments.from_arrays(y[:20], x[:20]), Moments.from_arrays(y[20:], x[20:])
    pooled = a + b
    whole = Moments.from_arrays(y, x)
    assert pooled.n == 50 and np.allclose(pooled.sum_xx, whole.sum_xx)
    with pytest.raises(ValueError, match="covariate"):
        regression_adjusted(a, Moments.from_arrays(y[:5], x[:5, :1]))
    with pytest.raises(ValueError, match="at least"):
        regression_adjusted(Moments.from_arrays(y[:3], x[:3]), a)
    with pytest.raises(ValueError, match="exactly one"):
        cuped(a, b)


def test_constant_covariate_in_an_arm_is_dropped_not_a_crash():
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    x = np.column_stack([rng.normal(size=200), np.ones(200)])
    out = regression_adjusted(
        Moments.from_arrays(y[:100], x[:100]), Moments.from_arrays(y[100:], x[100:])
    )
    ref = regression_adjusted(
        Moments.from_arrays(y[:100], x[:100, :1]), Moments.from_arrays(y[100:], x[100:, :1])
    )
    assert out.effect.estimate == pytest.approx(ref.effect.estimate)
    assert out.se == pytest.approx(ref.se)


def test_sequential_adjusted_interval_is_wider_and_always_valid():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 1))
    y = x[:, 0] + rng.normal(size=4000)
    t, c = Moments.from_arrays(y[:2000], x[:2000]), Moments.from_arrays(y[2000:], x[2000:])
    fixed = regression_adjusted(t, c)
    seq = regression_adjusted(t, c, tuning_n=4000)
    assert seq.effect.estimate == pytest.approx(fixed.effect.estimate)
    assert seq.effect.ci_high - seq.effect.ci_low > fixed.effect.ci_high - fixed.effect.ci_low
    assert seq.effect.p_value >= fixed.effect.p_value


def test_adjusted_test_aa_calibration():
    """Small version of the bench's adjusted A/A: false-positive rate and 95% CI coverage."""
    from tests.test_sequential import _load_bench

    out = _load_bench().simulate_adjusted_aa(n_sims=600, n_per_arm=800, seed=21)
    tol = 4 * math.sqrt(0.05 * 0.95 / 600)
    assert abs(out["false_positive_rate"] - 0.05) <= tol, out
    assert abs(out["coverage_95"] - 0.95) <= tol, out


@pytest.mark.parametrize("outcome", ["spend", "visit"])
def test_engine_covariate_sums_give_the_same_moments_and_ols_agreement(hillstrom, outcome):
    """The engine's GroupStats covariate sums (the compiled query, outcome-table input) are the one
    source of the adjustment's moments: equal to the hand-written SQL's, and the adjusted estimate
    and SE still equal statsmodels OLS to 1e-6 on Hillstrom."""
    from loopexp.analysis.analyze import moments_from_table
    from loopexp.metrics import Measure, MetricDef, compute_outcome_metrics

    frame = hillstrom.rename(columns={"segment": "variant_id"})
    kind = "mean" if outcome == "spend" else "proportion"
    metric = MetricDef(
        name=outcome,
        kind=kind,
        numerator=Measure(column=outcome),
        denominator="assigned",
        covariates=COVARIATES,
    )
    table = compute_outcome_metrics(frame, [metric])
    moments = moments_from_table(table, COVARIATES)
    arm, control = "Womens E-Mail", "No E-Mail"
    for variant in (arm, control):
        got = moments[(outcome, variant)]
        ref = _duckdb_moments(hillstrom, variant, outcome, COVARIATES)
        assert got.n == ref.n
        np.testing.assert_allclose([got.sum_y, got.sum_y2], [ref.sum_y, ref.sum_y2], rtol=1e-12)
        np.testing.assert_allclose(got.sum_x, ref.sum_x, rtol=1e-12)
        np.testing.assert_allclose(got.sum_xx, ref.sum_xx, rtol=1e-12)
        np.testing.assert_allclose(got.sum_xy, ref.sum_xy, rtol=1e-12)
    out = regression_adjusted(moments[(outcome, arm)], moments[(outcome, control)])
    coef, se_ref, _ = _statsmodels_reference(hillstrom, arm, control, outcome, COVARIATES)
    assert out.effect.estimate == pytest.approx(coef, rel=1e-6, abs=1e-9)
    assert out.se == pytest.approx(se_ref, rel=1e-6)
    # Fewer covariates than the metric carries: the sub-matrix, still complete.
    assert set(moments_from_table(table, ["newbie", "history"])) == set(moments)
