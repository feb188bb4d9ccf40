"""Two-proportion comparison: pooled z-test, Wald interval, delta-method relative lift.

The classic textbook trio, kept as a public function (and pinned by the reference tests). The
analysis does not decide on it: its Wald and delta-method intervals collapse at rates of 0 or 1
and can disagree with its own test. :mod:`loopexp.stats.comparison` (score test with the Mee and
Koopman intervals that invert it) is what :func:`loopexp.analysis.analyze.analyze` uses.
"""

from __future__ import annotations

from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from loopexp.stats.effect import Effect, relative_lift


def compare_proportions(
    successes_t: float, n_t: int, successes_c: float, n_c: int, alpha: float = 0.05
) -> Effect:
    """Compare a treatment rate with a control rate.

    The test is the pooled two-proportion z-test (statsmodels ``proportions_ztest``; equals R
    ``prop.test(correct=FALSE)``, z² = χ²). The absolute CI is the unpooled Wald interval
    (``confint_proportions_2indep(method="wald")``), the relative CI the delta method.
    """
    if min(n_t, n_c) <= 0:
        raise ValueError(f"both groups need recipients; got n_t={n_t}, n_c={n_c}")
    p_t, p_c = successes_t / n_t, successes_c / n_c
    if successes_t + successes_c in (0, n_t + n_c):
        # Both rates 0 (or both 1): no variance, the data carry no evidence of a difference.
        statistic, p_value = 0.0, 1.0
    else:
        statistic, p_value = proportions_ztest([successes_t, successes_c], [n_t, n_c])
    ci_low, ci_high = confint_proportions_2indep(
        successes_t, n_t, successes_c, n_c, method="wald", compare="diff", alpha=alpha
    )
    lift, se, rel_low, rel_high = relative_lift(
        p_t, p_t * (1 - p_t), n_t, p_c, p_c * (1 - p_c), n_c, alpha
    )
    return Effect(
        control_value=p_c,
        treatment_value=p_t,
        estimate=p_t - p_c,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        rel_lift=lift,
        rel_ci_low=rel_low,
        rel_ci_high=rel_high,
        rel_se=se,
        p_value=float(p_value),
        statistic=float(statistic),
        method="two-proportion z-test (pooled), Wald CI, delta-method relative CI",
    )
