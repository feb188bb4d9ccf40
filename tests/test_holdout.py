"""Holdout incrementality: Hillstrom's no-e-mail arm as holdout reproduces the published figures.

Published per-arm figures: ../shared/data/SOURCES.md (n, visit / conversion rate, spend per
customer) and ../shared/reference/stats-references.md §10 (purchasers and revenue per arm), copied
here as constants. The lifts against no e-mail follow from them exactly.
"""

from __future__ import annotations

import math

import duckdb
import pytest

from loopexp.sim.datasets import load_hillstrom
from loopexp.stats.incrementality import (
    ALL_MAILED,
    GroupSums,
    compare_to_holdout,
    holdout_comparisons,
)

ARMS = {"Mens E-Mail": "mens", "Womens E-Mail": "womens", "No E-Mail": "holdout"}
PUBLISHED_N = {"mens": 21_307, "womens": 21_387, "holdout": 21_306}
PURCHASERS = {"mens": 267, "womens": 189, "holdout": 122}
REVENUE = {"mens": 30_311.69, "womens": 23_038.11, "holdout": 13_908.33}
EXACT_MEANS = {  # SOURCES.md, "Exact means from this file"
    "visit": {"mens": 0.182757, "womens": 0.151400, "holdout": 0.106167},
    "conversion": {"mens": 0.012531, "womens": 0.008837, "holdout": 0.005726},
    "spend": {"mens": 1.422617, "womens": 1.077202, "holdout": 0.652789},
}
PUBLISHED_TABLE = {  # SOURCES.md table, as printed (percent with 2 decimals, dollars with 2)
    "visit": {"mens": "18.28%", "womens": "15.14%", "holdout": "10.62%"},
    "conversion": {"mens": "1.25%", "womens": "0.88%", "holdout": "0.57%"},
    "spend": {"mens": "$1.42", "womens": "$1.08", "holdout": "$0.65"},
}


@pytest.fixture(scope="module")
def groups():
    frame = load_hillstrom()
    frame["segment"] = frame["segment"].astype(str)
    with duckdb.connect() as con:
        con.register("h", frame)
        rows = con.execute(
            "SELECT segment, count(*), "
            + ", ".join(f"sum({m})::DOUBLE, sum({m}::DOUBLE * {m})" for m in EXACT_MEANS)
            + " FROM h GROUP BY segment"
        ).fetchall()
    out: dict[str, dict[str, GroupSums]] = {m: {} for m in EXACT_MEANS}
    for row in sorted(rows, key=lambda r: list(ARMS).index(r[0])):
        for i, metric in enumerate(EXACT_MEANS):
            out[metric][ARMS[row[0]]] = GroupSums(row[1], row[2 + 2 * i], row[3 + 2 * i])
    return out


@pytest.mark.parametrize("metric", list(EXACT_MEANS))
def test_hillstrom_per_arm_figures_are_the_published_ones(groups, metric):
    kind = "mean" if metric == "spend" else "proportion"
    records = holdout_comparisons(metric, kind, groups[metric])
    assert [r.arm for r in records] == ["mens", "womens", ALL_MAILED]
    for r in records[:2]:
        assert r.n_arm == PUBLISHED_N[r.arm] and r.n_holdout == PUBLISHED_N["holdout"]
        values = {r.arm: r.effect.treatment_value, "holdout": r.effect.control_value}
        for arm, value in values.items():
            assert round(value, 6) == EXACT_MEANS[metric][arm]
            shown = f"${value:.2f}" if metric == "spend" else f"{value:.2%}"
            assert shown == PUBLISHED_TABLE[metric][arm]


def test_hillstrom_lifts_against_no_email_are_exact(groups):
    conv = {r.arm: r for r in holdout_comparisons("conversion", "proportion", groups["conversion"])}
    spend = {r.arm: r for r in holdout_comparisons("spend", "mean", groups["spend"])}
    base_rate = PURCHASERS["holdout"] / PUBLISHED_N["holdout"]
    base_spend = REVENUE["holdout"] / PUBLISHED_N["holdout"]
    for arm in ("mens", "womens"):
        n = PUBLISHED_N[arm]
        rate_lift = PURCHASERS[arm] / n - base_rate
        spend_lift = REVENUE[arm] / n - base_spend
        assert conv[arm].effect.estimate == pytest.approx(rate_lift, abs=1e-12)
        assert spend[arm].effect.estimate == pytest.approx(spend_lift, abs=1e-9)
        assert conv[arm].effect.rel_lift == pytest.approx(rate_lift / base_rate, rel=1e-12)
        # Incremental totals: what the mailing earned over not mailing, per arm.
        assert conv[arm].incremental_total == pytest.approx(rate_lift * n, rel=1e-12)
        assert spend[arm].incremental_total == pytest.approx(spend_lift * n, rel=1e-9)
        assert spend[arm].incremental_ci_low < spend[arm].incremental_total
        assert spend[arm].incremental_total < spend[arm].incremental_ci_high
    # Published headline lifts: men's +0.68 pp conversion and +$0.77 per customer; women's
    # +0.31 pp and +$0.42. Both e-mails beat no e-mail significantly (Holm).
    assert f"{conv['mens'].effect.estimate:.2%}" == "0.68%"
    assert f"{conv['womens'].effect.estimate:.2%}" == "0.31%"
    assert f"{spend['mens'].effect.estimate:.2f}" == "0.77"
    assert f"{spend['womens'].effect.estimate:.2f}" == "0.42"
    assert conv["mens"].p_value_adjusted < 0.05 and spend["womens"].p_value_adjusted < 0.05
    # Men's e-mail earned about $16,400 over not mailing its 21,307 customers.
    assert round(spend["mens"].incremental_total, -2) == 16_400


def test_pooled_mailed_arms_against_holdout(groups):
    spend = {r.arm: r for r in holdout_comparisons("spend", "mean", groups["spend"])}
    n_mailed = PUBLISHED_N["mens"] + PUBLISHED_N["womens"]
    pooled_mean = (REVENUE["mens"] + REVENUE["womens"]) / n_mailed
    base = REVENUE["holdout"] / PUBLISHED_N["holdout"]
    r = spend[ALL_MAILED]
    assert r.n_arm == n_mailed
    assert r.effect.estimate == pytest.approx(pooled_mean - base, abs=1e-9)
    assert r.incremental_total == pytest.approx(
        spend["mens"].incremental_total + spend["womens"].incremental_total, rel=1e-9
    )
    assert math.isclose(r.p_value_adjusted, r.effect.p_value)  # not part of the arm family


def test_sequential_holdout_intervals_are_wider(groups):
    fixed = compare_to_holdout(groups["spend"]["mens"], groups["spend"]["holdout"], "mean")
    seq = compare_to_holdout(
        groups["spend"]["mens"], groups["spend"]["holdout"], "mean", tuning_n=40_000
    )
    assert seq.estimate == fixed.estimate
    assert seq.ci_high - seq.ci_low > fixed.ci_high - fixed.ci_low
    assert "always-valid" in seq.method


def test_missing_or_empty_holdout_is_a_clear_error(groups):
    with pytest.raises(ValueError, match=r"audience\.holdout"):
        holdout_comparisons("spend", "mean", {"mens": groups["spend"]["mens"]})
    with pytest.raises(ValueError, match="at least 2"):
        compare_to_holdout(GroupSums(100, 5, 5), GroupSums(0, 0, 0), "proportion")
