"""Censoring-aware window rates, their difference, and flow planning (loopexp.stats.survival,
loopexp.design.flow_plan): against published values, closed forms and a small simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopexp.design.flow_plan import daily_look_power, km_variance, plan_flow
from loopexp.design.plan import sample_size_per_variant
from loopexp.sim.flows import draw_flow_outcomes
from loopexp.stats.survival import (
    WindowRate,
    km_window_rate,
    matured_rate,
    window_difference,
    window_times,
)

# Freireich et al. (1963) 6-MP arm, remission times in weeks (0: censored). Kaplan–Meier and
# Greenwood standard errors as published in Klein & Moeschberger, *Survival Analysis* (2003),
# Table 4.1B (the same as R's survfit(Surv(time, status) ~ 1)).
SIX_MP_T = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
SIX_MP_E = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
PUBLISHED = {
    6: (0.857, 0.076),
    7: (0.807, 0.087),
    10: (0.753, 0.096),
    13: (0.690, 0.107),
    16: (0.628, 0.114),
    22: (0.538, 0.128),
    23: (0.448, 0.135),
}


@pytest.mark.parametrize("week", sorted(PUBLISHED))
def test_kaplan_meier_matches_the_published_6mp_table(week: int) -> None:
    rate = km_window_rate(np.array(SIX_MP_T, float), np.array(SIX_MP_E, bool), week)
    surv, se = PUBLISHED[week]
    assert 1 - rate.value == pytest.approx(surv, abs=6e-4)
    assert rate.se == pytest.approx(se, abs=6e-4)


def test_window_times_censor_at_follow_up_or_window() -> None:
    t = np.array([1.0, 5.0, np.nan, 2.0, 9.0])
    follow = np.array([3.0, 3.0, 10.0, 10.0, 10.0])
    duration, event = window_times(t, follow, 7.0)
    assert duration.tolist() == [1.0, 3.0, 7.0, 2.0, 7.0]
    assert event.tolist() == [True, False, False, True, False]  # 9 days is after the window


def test_complete_follow_up_gives_the_plain_proportion() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    t = np.where(rng.random(n) < 0.1, rng.uniform(0, 7, n), np.nan)
    duration, event = window_times(t, np.full(n, 30.0), 7.0)
    rate = km_window_rate(duration, event, 7.0)
    p = np.isfinite(t).mean()
    assert rate.value == pytest.approx(p, abs=1e-12)
    assert rate.se == pytest.approx(math.sqrt(p * (1 - p) / n), rel=1e-9)
    assert matured_rate(t, np.full(n, 30.0), 7.0) == (pytest.approx(p), int(p * n), n)


def test_nobody_followed_for_the_window_is_no_estimate_not_a_zero() -> None:
    rate = km_window_rate(np.array([1.0, 2.0]), np.array([True, False]), 7.0)
    assert math.isnan(rate.value) and rate.matured == 0
    effect = window_difference(rate, WindowRate(0.1, 0.01, 100, 10, 100))
    assert effect.p_value == 1.0 and effect.ci_low == -math.inf and effect.ci_high == math.inf


def test_fixed_difference_is_the_wald_interval_and_sequential_is_wider() -> None:
    t, c = WindowRate(0.12, 0.01, 1000, 120, 900), WindowRate(0.10, 0.009, 1000, 100, 900)
    fixed = window_difference(t, c, alpha=0.05, sequential=False)
    se = math.sqrt(0.01**2 + 0.009**2)
    assert fixed.estimate == pytest.approx(0.02)
    assert fixed.ci_high - fixed.estimate == pytest.approx(1.959964 * se, rel=1e-5)
    assert fixed.rel_lift == pytest.approx(0.2)
    seq = window_difference(t, c, alpha=0.05, sequential=True, tuning_n=2000)
    assert seq.ci_high - seq.ci_low > fixed.ci_high - fixed.ci_low
    assert seq.p_value > fixed.p_value


def test_naive_count_is_biased_against_the_later_arm_and_km_is_not() -> None:
    """Equal W-day rates; the control converts later (reminder on day 3, not 1). 200 looks."""
    rng = np.random.default_rng(26)
    rates, nudge, km, naive = np.array([0.1, 0.1]), np.array([3.0, 1.0]), [], []
    for _ in range(200):
        arm, entry, t = draw_flow_outcomes(rng, 4000, np.array([0.5, 0.5]), rates, nudge, 7, 10)
        follow = 10.0 - entry
        est, so_far = [], []
        for k in (0, 1):
            m = arm == k
            est.append(km_window_rate(*window_times(t[m], follow[m], 7.0), 7.0).value)
            so_far.append(np.mean(np.isfinite(t[m]) & (t[m] <= follow[m])))
        km.append(est[1] - est[0])
        naive.append(so_far[1] - so_far[0])
    # Monte-Carlo SE of the mean difference ~0.0008 (sd ~0.011 / sqrt(200))
    assert abs(np.mean(km)) < 0.003
    assert np.mean(naive) > 0.008  # the later-converting control looks worse


def test_km_variance_closed_form_with_complete_follow_up() -> None:
    # Everyone followed for the whole window: Greenwood's variance is p(1-p)/n.
    var = km_variance(0.1, 7.0, 1000.0, 10.0, day=100.0)
    assert var == pytest.approx(0.1 * 0.9 / 10_000, rel=0.01)
    assert km_variance(0.1, 7.0, 1000.0, 10.0, day=5.0) == math.inf


def test_plan_days_are_entry_days_plus_the_window_and_power_holds() -> None:
    plan = plan_flow(0.08, 0.25, 1000, 7, power=0.8)
    assert plan.days == pytest.approx(plan.entry_days + 7)
    assert plan.total == pytest.approx(plan.entry_days * 1000, abs=1)
    achieved = daily_look_power((0.08, 0.1), 500, plan.entry_days, 7, 0.05)
    assert achieved == pytest.approx(0.8, abs=0.015)
    # the last look alone would need more: looking daily is counted, not ignored
    last_look = sample_size_per_variant(0.08, 0.25, sequential=True).per_variant
    assert plan.per_arm < last_look
    fixed = plan_flow(0.08, 0.25, 1000, 7, sequential=False)
    assert fixed.per_arm == sample_size_per_variant(0.08, 0.25).per_variant
