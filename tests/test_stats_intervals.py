"""The decision's tests and intervals against R, statsmodels and their own consistency.

Reference values: ``tests/data/score_intervals.json`` (made by ``score_intervals.R``: numerical
likelihood maximisation and ``uniroot``, independent of our closed forms) and
``tests/data/fieller_cochran.json`` (``fieller_cochran.R``: ``t.test``, ``polyroot``, hand-coded
Cochran's Q).
"""

from __future__ import annotations

import gc
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.multitest import multipletests

from loopexp.stats import (
    ScoreProportions,
    WelchFieller,
    adjust_pvalues,
    best_and_loss,
    cochran_q,
    fieller,
    interval_alphas,
    posteriors,
    score,
)

DATA = Path(__file__).parent / "data"
SCORE_CASES = json.loads((DATA / "score_intervals.json").read_text())
FIELLER = json.loads((DATA / "fieller_cochran.json").read_text())


def _num(x):
    return math.inf if x == "inf" else float(x)


@pytest.mark.parametrize(
    "case", SCORE_CASES, ids=lambda c: f"{c['x_t']}/{c['n_t']}-{c['x_c']}/{c['n_c']}-{c['alpha']}"
)
def test_score_intervals_and_p_match_r(case):
    """Mee difference and Koopman ratio intervals, and the pooled-z p-value (R prop.test), at
    ordinary and boundary counts; R's bounds come from optimize + uniroot (tolerance 1e-7)."""
    args = (case["x_t"], case["n_t"], case["x_c"], case["n_c"])
    lo, hi = score.diff_interval(*args, alpha=case["alpha"])
    np.testing.assert_allclose([lo, hi], case["diff_ci"], rtol=0, atol=1e-7)
    r_lo, r_hi = score.ratio_interval(*args, alpha=case["alpha"])
    for got, want in ((r_lo, _num(case["ratio_ci"][0])), (r_hi, _num(case["ratio_ci"][1]))):
        if math.isinf(want) or want == 0:
            assert got == want
        else:
            assert got == pytest.approx(want, rel=1e-7)
    assert score.score_test(*args)[1] == pytest.approx(case["p_value"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "args", [(7, 34, 1, 34), (200, 5000, 180, 5000), (15, 60, 6, 80), (10, 5000, 22, 5000)]
)
def test_score_ratio_interval_and_test_match_statsmodels(args):
    """Interior counts: our Koopman interval equals statsmodels' score ratio interval
    (``correction=False``) and our p equals its score test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm_proportion.confint_proportions_2indep(
            *args, method="score", compare="ratio", correction=False
        )
        p_ref = sm_proportion.test_proportions_2indep(
            *args, method="score", compare="diff", correction=False
        ).pvalue
    np.testing.assert_allclose(score.ratio_interval(*args), ref, rtol=1e-8)
    assert score.score_test(*args)[1] == pytest.approx(p_ref, rel=1e-10)


def test_statsmodels_score_difference_is_off_the_likelihood_maximum():
    """Why our own cubic: at 7/34 vs 1/34 statsmodels' score difference bound (0.028679) differs
    from R's numerical-likelihood bound (0.028371) by 3e-4; ours matches R."""
    ref = sm_proportion.confint_proportions_2indep(
        7, 34, 1, 34, method="score", compare="diff", correction=False
    )
    r_value = next(c for c in SCORE_CASES if c["n_t"] == 34 and c["alpha"] == 0.05)["diff_ci"][0]
    assert abs(ref[0] - r_value) > 1e-4
    assert abs(score.diff_interval(7, 34, 1, 34)[0] - r_value) < 1e-7


def test_score_interval_excludes_null_exactly_when_test_rejects():
    """2,000 random tables (n 1-500, any rate incl. 0 and 1), alphas 0.05 / 0.01 / 0.0167: the
    difference interval excludes 0, the ratio interval excludes 1, and p < alpha, all together;
    one-sided p at a margin < alpha exactly when the 2 alpha interval lies beyond it."""
    rng = np.random.default_rng(1)
    for _ in range(2000):
        n_t, n_c = rng.integers(1, 500, size=2)
        x_t, x_c = rng.binomial(n_t, rng.uniform()), rng.binomial(n_c, rng.uniform())
        m = ScoreProportions(float(x_t), int(n_t), float(x_c), int(n_c))
        p = m.p_value()
        for alpha in (0.05, 0.01, 0.05 / 3):
            ci = m.interval(alpha)
            assert (ci.diff_low > 0 or ci.diff_high < 0) == (p < alpha), (x_t, n_t, x_c, n_c)
            assert (ci.ratio_low > 1 or ci.ratio_high < 1) == (p < alpha), (x_t, n_t, x_c, n_c)
        if x_t and x_c:
            ci = m.interval(0.10)
            assert (m.one_sided_p(1.2, "less") < 0.05) == (ci.ratio_high < 1.2)
            assert (m.one_sided_p(1.2, "greater") < 0.05) == (ci.ratio_low > 1.2)


@pytest.mark.parametrize("case", FIELLER["welch_fieller"], ids=["a0.05", "a0.01"])
def test_welch_and_fieller_match_r(case):
    """Welch t, df, p and difference CI (R t.test); Fieller ratio CI (R polyroot); 1e-9."""
    m = WelchFieller(
        case["n_t"], case["sum_t"], case["sum_sq_t"], case["n_c"], case["sum_c"], case["sum_sq_c"]
    )
    t, p = m.test()
    assert t == pytest.approx(case["t"], rel=1e-9)
    assert m.w.df == pytest.approx(case["df"], rel=1e-9)
    assert p == pytest.approx(case["p_value"], rel=1e-9)
    ci = m.interval(case["alpha"])
    np.testing.assert_allclose([ci.diff_low, ci.diff_high], case["diff_ci"], rtol=1e-9)
    np.testing.assert_allclose([ci.ratio_low, ci.ratio_high], case["ratio_ci"], rtol=1e-9)


def test_fieller_excludes_one_exactly_when_welch_rejects():
    """1,000 random revenue-like samples (5 % buyers, lognormal): Fieller's ratio interval
    excludes 1 exactly when Welch's p < alpha, including its unbounded cases."""
    rng = np.random.default_rng(2)
    unbounded = 0
    for _ in range(1000):
        n = int(rng.integers(20, 400))
        a = np.where(rng.random(n) < 0.05, rng.lognormal(2, 1.5, n), 0.0)
        b = np.where(rng.random(n) < 0.05 * rng.uniform(0.5, 3), rng.lognormal(2, 1.5, n), 0.0)
        if a.sum() == 0 and b.sum() == 0:
            continue
        w = fieller.welch_stats(n, b.sum(), (b**2).sum(), n, a.sum(), (a**2).sum())
        if w.se2_t + w.se2_c == 0:
            continue
        p = fieller.welch_test(w)[1]
        lo, hi = fieller.ratio_interval(w, 0.05)
        unbounded += math.isinf(lo) or math.isinf(hi)
        assert (lo > 1 or hi < 1) == (p < 0.05)
    assert unbounded > 10  # the unbounded branches were exercised


def test_cochran_q_matches_r():
    """Cochran's Q and its chi-square p on four segments' log risk ratios (hand-coded in R)."""
    ref = FIELLER["cochran"]
    cells = [
        (f"s{i}", n_t, x_t, x_t, n_c, x_c, x_c)
        for i, (x_t, n_t, x_c, n_c) in enumerate(ref["cells"])
    ]
    q, df, p, i2, used = cochran_q("proportion", cells)
    assert q == pytest.approx(ref["q"], rel=1e-12)
    assert p == pytest.approx(ref["p_value"], rel=1e-10)
    assert df == 3 and used == ["s0", "s1", "s2", "s3"]
    assert i2 == pytest.approx(max(0.0, (q - 3) / q))


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_numpy_adjustment_equals_multipletests(method, monkeypatch):
    """Our numpy Holm / Bonferroni / BH equal statsmodels' multipletests on 300 random families
    (sizes 1-30, with ties), in input order."""
    # multipletests runs gc.collect() on every call (the reason for our own numpy version).
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)
    rng = np.random.default_rng(3)
    for _ in range(300):
        m = int(rng.integers(1, 30))
        p = np.round(rng.uniform(0, 0.2, m) ** rng.uniform(0.5, 3), 3)
        np.testing.assert_allclose(
            adjust_pvalues(p, method), multipletests(p, method=method)[1], rtol=1e-12
        )


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh", "none"])
def test_interval_levels_match_adjusted_rejections(method):
    """For random families, a two-sided interval at the level :func:`interval_alphas` gives
    excludes the null (p < its alpha, by test inversion) exactly when the adjusted p < alpha."""
    rng = np.random.default_rng(4)
    for _ in range(2000):
        m = int(rng.integers(1, 10))
        p = rng.uniform(0, 0.1, m) ** rng.uniform(0.5, 2)
        adjusted = np.array(adjust_pvalues(p, method))
        levels = np.array(interval_alphas(p, method, 0.05))
        assert np.all(levels <= 0.05 + 1e-15)
        np.testing.assert_array_equal(p < levels, adjusted < 0.05)


def test_beta_binomial_prob_best_and_loss_match_integration():
    """Two arms, Beta(1,1) prior: P(B best) and E[max(0, A - B)] from the grid quadrature match
    scipy's adaptive integration of the Beta posteriors (a different method) and, for a
    lower-is-better metric, the mirrored answer."""
    dists = posteriors("proportion", [(1000, 40, 40), (1000, 52, 52)], (1.0, 1.0))
    best, loss = best_and_loss(dists)
    a, b = sps.beta(41, 961), sps.beta(53, 949)
    p_b_best = integrate.quad(lambda x: b.pdf(x) * a.cdf(x), 0, 0.2, limit=200)[0]
    loss_b = integrate.dblquad(
        lambda y, x: max(x - y, 0.0) * a.pdf(x) * b.pdf(y), 0, 0.15, 0, 0.15
    )[0]
    assert best[1] == pytest.approx(p_b_best, abs=1e-5)
    assert loss[1] == pytest.approx(loss_b, abs=1e-6)
    assert loss[0] == 0.0 and best.sum() == pytest.approx(1.0, abs=1e-6)
    low_best, low_loss = best_and_loss(dists, higher_is_better=False)
    assert low_best[0] == pytest.approx(p_b_best, abs=1e-5)
    loss_a = integrate.dblquad(
        lambda y, x: max(y - x, 0.0) * a.pdf(x) * b.pdf(y), 0, 0.15, 0, 0.15
    )[0]
    assert low_loss[1] == pytest.approx(loss_a, abs=1e-6)


def test_prob_best_of_three_arms_sums_to_one_and_orders():
    """Three arms: chance to be best sums to 1 and follows the rates; a three-way tie splits it."""
    dists = posteriors("proportion", [(5000, 200, 200), (5000, 240, 240), (5000, 180, 180)])
    best, _ = best_and_loss(dists)
    assert best.sum() == pytest.approx(1.0, abs=1e-6)
    assert best[1] > best[0] > best[2]
    tie, _ = best_and_loss(posteriors("proportion", [(5000, 200, 200)] * 3))
    np.testing.assert_allclose(tie, 1 / 3, atol=1e-4)
