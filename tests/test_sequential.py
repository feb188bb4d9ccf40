"""Always-valid comparisons: gbstats reference values, duality of p-value and sequence, calibration.

The reference values are GrowthBook gbstats' confidence-sequence tests
(tests/data/stats-vectors.json, ids ``gbstats_sequential_*``). The calibration test is the small
version of bench/sequential_calibration.py: A/A campaigns looked at daily, stopping at the first
ship.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from loopexp.stats.sequential import (
    always_valid_pvalue,
    always_valid_pvalues,
    cs_halfwidth,
    sequential_means,
    sequential_proportions,
    tuning_n_for_plan,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = {v["id"]: v for v in json.loads((ROOT / "tests/data/stats-vectors.json").read_text())}


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        "sequential_calibration", ROOT / "bench" / "sequential_calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_means_confidence_sequence_matches_gbstats_tuning_1000():
    v = VECTORS["gbstats_sequential_tuning1000"]
    a, b = v["inputs"]["control"], v["inputs"]["treatment"]
    e = sequential_means(
        b["n"], b["sum"], b["sum_squares"], a["n"], a["sum"], a["sum_squares"], 0.05, 1000
    )
    assert round(e.rel_lift, 5) == v["expected"]["expected"]
    assert round(e.rel_se, 5) == v["expected"]["uplift_stddev"]
    assert [round(e.rel_ci_low, 5), round(e.rel_ci_high, 5)] == v["expected"]["ci"]


def test_proportion_confidence_sequence_matches_gbstats_default():
    v = VECTORS["gbstats_sequential_prop_default"]
    a, b = v["inputs"]["control"], v["inputs"]["treatment"]
    e = sequential_proportions(b["x"], b["n"], a["x"], a["n"], 0.05, 5000)
    assert round(e.rel_lift, 5) == v["expected"]["expected"]
    assert round(e.rel_se, 5) == v["expected"]["uplift_stddev"]
    assert [round(e.rel_ci_low, 5), round(e.rel_ci_high, 5)] == v["expected"]["ci"]


def test_sequence_is_wider_than_the_fixed_horizon_interval():
    # Fixed-horizon CI of the same inputs (gbstats): [-0.00841, 0.00700] with sd 0.00391.
    v = VECTORS["gbstats_sequential_ratio_cuped_default"]
    half = cs_halfwidth(v["expected"]["uplift_stddev"], 200, 0.05, 5000)
    assert round(-0.0007 - half, 4) == round(v["expected"]["ci"][0], 4)
    assert half > 1.96 * v["expected"]["uplift_stddev"]


@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.01])
def test_pvalue_below_alpha_exactly_when_sequence_excludes_zero(alpha):
    """The p-value inverts the sequence (same mixture): p < alpha <=> 0 outside the 1-alpha CS."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(100, 100_000))
        se = float(rng.uniform(0.001, 0.1))
        est = float(rng.normal(0, 4 * se))
        p = always_valid_pvalue(est, se, n, tuning_n=20_000, design_alpha=0.05)
        half = cs_halfwidth(se, n, alpha, tuning_n=20_000, design_alpha=0.05)
        if abs(abs(est) - half) > 1e-9:
            assert (p < alpha) == (abs(est) > half), (n, se, est, p, half)


def test_pvalue_array_equals_scalar_and_is_conservative_against_fixed_horizon():
    z = np.array([0.0, 1.0, 1.96, 3.0, 5.0])
    n = np.array([1000, 5000, 10_000, 10_000, 50_000])
    arr = always_valid_pvalues(z, n, 10_000)
    for zi, ni, pi in zip(z, n, arr, strict=True):
        assert math.isclose(always_valid_pvalue(zi, 1.0, ni, 10_000), pi, rel_tol=1e-12)
    fixed = 2 * (1 - __import__("scipy").stats.norm.cdf(z))
    assert np.all(arr >= fixed - 1e-12)  # always-valid p is never smaller than the fixed one
    assert arr[0] == 1.0


def test_degenerate_inputs_are_no_evidence():
    e = sequential_proportions(0, 100, 0, 100)
    assert e.p_value == 1.0 and e.estimate == 0
    assert always_valid_pvalue(float("nan"), 0.1, 100, 1000) == 1.0
    with pytest.raises(ValueError, match="recipients"):
        sequential_proportions(1, 0, 1, 10)


def test_tuning_n_follows_the_plan():
    assert tuning_n_for_plan(12_000) == 24_000
    assert tuning_n_for_plan(None) == 5000


def test_daily_looks_keep_false_ship_rate_at_half_alpha():
    """Small version of bench/sequential_calibration.py: 2,000 A/A campaigns, 14 daily looks,
    2 and 3 arms. The sequential rule ships a false winner in <= alpha/2 (+ 4 SE); daily-peeked
    fixed-horizon tests ship far more often (the bug this method fixes)."""
    bench = _load_bench()
    for arms in (2, 3):
        out = bench.simulate_looks(
            n_sims=2000, arms=arms, n_per_arm_per_day=1000, rate=0.03, lift=0.0, seed=11 + arms
        )
        tol = 4 * math.sqrt(0.025 * 0.975 / 2000)
        assert out["sequential_ship"] <= 0.025 + tol, out
        assert out["fixed_peeking_ship"] > 0.05, out  # peeking inflates 2.5% to ~8-11%
        assert abs(out["fixed_final_ship"] - 0.025) <= tol, out
