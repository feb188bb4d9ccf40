"""The packaged Hillstrom data reproduces its published figures.

References:
    [SRC] loopexp/sim/datasets/SOURCES.md (copy of /work/shared/data/SOURCES.md, Hillstrom section).
    [REF10] /work/shared/reference/stats-references.md section 10 and the vectors
        ``hillstrom_per_arm`` / ``hillstrom_spend_ttest_mens_vs_none`` in stats-vectors.json.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import pandas as pd
import pytest
from scipy import stats as sps

from loopexp.sim.datasets import (
    HILLSTROM_ARMS,
    HILLSTROM_SHA256,
    DatasetIntegrityError,
    hillstrom_outcomes,
    hillstrom_sufficient_stats,
    load_hillstrom,
)
from loopexp.stats import compare_means, compare_proportions

MENS, WOMENS, NONE = "Mens E-Mail", "Womens E-Mail", "No E-Mail"

# [SRC] "Published per-arm figures" table and [REF10] n column.
PUBLISHED_N = {MENS: 21_307, WOMENS: 21_387, NONE: 21_306}
# [SRC] "Exact means from this file" (6 decimals), confirmed by [REF10] for conversion and spend.
PUBLISHED_MEANS = {
    "visit": {MENS: 0.182757, WOMENS: 0.151400, NONE: 0.106167},
    "conversion": {MENS: 0.012531, WOMENS: 0.008837, NONE: 0.005726},
    "spend": {MENS: 1.422617, WOMENS: 1.077202, NONE: 0.652789},
}
# [SRC] "Published per-arm figures" table, rounded as printed (percent / dollars to 2 decimals).
PUBLISHED_ROUNDED = {
    MENS: (18.28, 1.25, 1.42),
    WOMENS: (15.14, 0.88, 1.08),
    NONE: (10.62, 0.57, 0.65),
}
# [REF10] Purchasers and revenue columns.
PUBLISHED_PURCHASERS = {MENS: 267, WOMENS: 189, NONE: 122}
PUBLISHED_REVENUE = {MENS: 30_311.69, WOMENS: 23_038.11, NONE: 13_908.33}


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return load_hillstrom()


@pytest.fixture(scope="module")
def stats_by_key() -> dict:
    return {(s.metric, s.variant_id): s for s in hillstrom_sufficient_stats()}


def test_packaged_file_checksum_and_shape(raw: pd.DataFrame) -> None:
    # [SRC] "SHA-256 of this copy" and "64,000 customers"; column order as in the Columns table.
    packaged = resources.files("loopexp.sim.datasets").joinpath("hillstrom.csv.gz").read_bytes()
    assert hashlib.sha256(gzip.decompress(packaged)).hexdigest() == HILLSTROM_SHA256
    assert HILLSTROM_SHA256 == "00a6a868e05a9ffe7382da51629f6d6dce88c5acfc945e79d314ebc78fd3a2c0"
    assert raw.shape == (64_000, 12)
    assert list(raw.columns) == [
        "recency",
        "history_segment",
        "history",
        "mens",
        "womens",
        "zip_code",
        "newbie",
        "channel",
        "segment",
        "visit",
        "conversion",
        "spend",
    ]
    assert not raw.isna().any().any()


def test_dtypes(raw: pd.DataFrame) -> None:
    # [SRC] Columns table: categoricals for the labelled columns, 0/1 ints, float dollars.
    for col in ("segment", "zip_code", "channel", "history_segment"):
        assert isinstance(raw[col].dtype, pd.CategoricalDtype), col
    for col in ("recency", "mens", "womens", "newbie", "visit", "conversion"):
        assert pd.api.types.is_integer_dtype(raw[col]), col
    for col in ("mens", "womens", "newbie", "visit", "conversion"):
        assert set(raw[col].unique()) <= {0, 1}, col
    for col in ("history", "spend"):
        assert pd.api.types.is_float_dtype(raw[col]), col
    # [SRC] recency: months since last purchase (1–12).
    assert raw["recency"].between(1, 12).all()


def test_arm_sizes(raw: pd.DataFrame) -> None:
    # [SRC] published n per arm 21,307 / 21,387 / 21,306; [REF10] n column.
    assert raw["segment"].value_counts().to_dict() == PUBLISHED_N


@pytest.mark.parametrize("metric", ["visit", "conversion", "spend"])
def test_arm_means_to_six_decimals(raw: pd.DataFrame, metric: str) -> None:
    # [SRC] "Exact means from this file"; [REF10] conversion, spend / customer, visit columns.
    means = raw.groupby("segment", observed=True)[metric].mean()
    assert {arm: round(float(means[arm]), 6) for arm in PUBLISHED_N} == PUBLISHED_MEANS[metric]


def test_arm_rates_as_printed(raw: pd.DataFrame) -> None:
    # [SRC] "Published per-arm figures" table: visit %, conversion %, spend per customer ($).
    means = raw.groupby("segment", observed=True)[["visit", "conversion", "spend"]].mean()
    for arm, (visit_pct, conversion_pct, spend) in PUBLISHED_ROUNDED.items():
        assert round(100 * means.at[arm, "visit"], 2) == visit_pct
        assert round(100 * means.at[arm, "conversion"], 2) == conversion_pct
        assert round(means.at[arm, "spend"], 2) == spend


def test_history_segment_counts(raw: pd.DataFrame) -> None:
    # [SRC] history_segment counts 22,970 / 14,254 / 12,289 / 6,409 / 4,911 / 1,859 / 1,308.
    counts = raw["history_segment"].value_counts(sort=False)
    assert list(counts.index) == [
        "1) $0 - $100",
        "2) $100 - $200",
        "3) $200 - $350",
        "4) $350 - $500",
        "5) $500 - $750",
        "6) $750 - $1,000",
        "7) $1,000 +",
    ]
    assert counts.tolist() == [22_970, 14_254, 12_289, 6_409, 4_911, 1_859, 1_308]


def test_zip_code_and_channel_counts(raw: pd.DataFrame) -> None:
    # [SRC] zip_code Surburban 28,776, Urban 25,661, Rural 9,563.
    assert raw["zip_code"].value_counts().to_dict() == {
        "Surburban": 28_776,
        "Urban": 25_661,
        "Rural": 9_563,
    }
    # [SRC] channel Web 28,217, Phone 28,021, Multichannel 7,762.
    assert raw["channel"].value_counts().to_dict() == {
        "Web": 28_217,
        "Phone": 28_021,
        "Multichannel": 7_762,
    }


def test_spenders_purchasers_and_revenue(raw: pd.DataFrame) -> None:
    # [SRC] "578 customers spent more than zero"; [REF10] total purchasers 578.
    assert int((raw["spend"] > 0).sum()) == 578
    assert int(raw["conversion"].sum()) == 578
    # [REF10] purchasers per arm 267 / 189 / 122.
    by_arm = raw.groupby("segment", observed=True)
    assert by_arm["conversion"].sum().to_dict() == PUBLISHED_PURCHASERS
    # [REF10] revenue per arm $30,311.69 / $23,038.11 / $13,908.33 (to the cent).
    revenue = by_arm["spend"].sum()
    assert {arm: round(float(revenue[arm]), 2) for arm in PUBLISHED_REVENUE} == PUBLISHED_REVENUE


def test_student_ttest_spend_mens_vs_none(raw: pd.DataFrame) -> None:
    # [REF10] scipy.stats.ttest_ind default (Student, pooled) on spend, Mens vs No E-Mail:
    # t = 5.300090294465472, p = 1.163200872605869e-07; reference tolerance rel 1e-9
    # (stats-vectors.json hillstrom_spend_ttest_mens_vs_none). The float sums here differ from
    # the reference run's in the last bits (t: 1 ulp, p: ~1e-14 relative).
    mens = raw.loc[raw["segment"] == MENS, "spend"]
    none = raw.loc[raw["segment"] == NONE, "spend"]
    result = sps.ttest_ind(mens, none)
    assert float(result.statistic) == pytest.approx(5.300090294465472, rel=1e-12)
    assert float(result.pvalue) == pytest.approx(1.163200872605869e-07, rel=1e-12)


def test_sufficient_stats_match_published(stats_by_key: dict) -> None:
    # [SRC] n and exact means per arm, via the DuckDB sufficient statistics.
    assert len(stats_by_key) == 3 * 3
    for arm, variant in HILLSTROM_ARMS.items():
        for metric, published in PUBLISHED_MEANS.items():
            s = stats_by_key[(metric, variant)]
            assert s.n == PUBLISHED_N[arm]
            assert round(s.mean, 6) == published[arm]
        # 0/1 outcomes: sum of squares equals the sum.
        for metric in ("visit", "conversion"):
            s = stats_by_key[(metric, variant)]
            assert s.sum_sq == s.sum
        # [REF10] purchasers and revenue per arm.
        assert stats_by_key[("conversion", variant)].sum == PUBLISHED_PURCHASERS[arm]
        assert round(stats_by_key[("spend", variant)].sum, 2) == PUBLISHED_REVENUE[arm]


def test_compare_means_spend_estimate(stats_by_key: dict) -> None:
    # [SRC] spend means 1.422617 (Mens) and 0.652789 (No E-Mail): the Welch estimate is their
    # difference, up to the 6-decimal rounding of each (|error| <= 1e-6). [REF10] vectors give
    # spend_lift_vs_control 0.769827 (tolerance 5e-7).
    t, c = stats_by_key[("spend", "mens")], stats_by_key[("spend", "no_email")]
    effect = compare_means(t.n, t.sum, t.sum_sq, c.n, c.sum, c.sum_sq)
    published_diff = PUBLISHED_MEANS["spend"][MENS] - PUBLISHED_MEANS["spend"][NONE]
    assert effect.estimate == pytest.approx(published_diff, abs=1e-6)
    assert effect.estimate == pytest.approx(0.769827, abs=5e-7)
    assert effect.treatment_value == pytest.approx(1.422617, abs=5e-7)
    assert effect.control_value == pytest.approx(0.652789, abs=5e-7)
    # Welch differs from the Student reference only slightly on near-equal arm sizes
    # ([REF10] note: "A Welch test on the same data will give a slightly different t and p").
    assert effect.statistic == pytest.approx(5.300090294465472, rel=1e-2)
    assert effect.p_value < 1e-6
    assert effect.ci_low > 0


def test_compare_proportions_conversion_significant(stats_by_key: dict) -> None:
    # [REF10] conversion 267/21,307 (0.012531) vs 122/21,306 (0.005726), Mens vs No E-Mail.
    t, c = stats_by_key[("conversion", "mens")], stats_by_key[("conversion", "no_email")]
    effect = compare_proportions(t.sum, t.n, c.sum, c.n)
    assert (t.sum, t.n, c.sum, c.n) == (267, 21_307, 122, 21_306)
    assert round(effect.treatment_value, 6) == 0.012531
    assert round(effect.control_value, 6) == 0.005726
    assert effect.p_value < 0.001
    assert effect.estimate > 0


def test_outcome_table() -> None:
    # [SRC] arms and n; lifecycle mapping newbie == 1 -> new_customer, else existing_customer.
    raw = load_hillstrom()
    outcomes = hillstrom_outcomes()
    assert list(outcomes.columns) == [
        "recipient_key",
        "variant_id",
        "segment",
        "visit",
        "conversion",
        "spend",
        "history",
    ]
    assert outcomes["variant_id"].value_counts().to_dict() == {"mens": 21_307, "no_email": 21_306}
    assert outcomes["recipient_key"].is_unique
    kept = raw[raw["segment"].isin([MENS, NONE])]
    expected_segment = kept["newbie"].map({1: "new_customer", 0: "existing_customer"})
    assert outcomes["segment"].tolist() == expected_segment.tolist()
    assert outcomes["spend"].tolist() == kept["spend"].tolist()
    assert outcomes["history"].tolist() == kept["history"].tolist()

    everyone = hillstrom_outcomes(arms=None)
    assert len(everyone) == 64_000
    assert everyone["variant_id"].value_counts().to_dict() == {
        HILLSTROM_ARMS[arm]: n for arm, n in PUBLISHED_N.items()
    }
    with pytest.raises(ValueError, match="unknown"):
        hillstrom_outcomes(arms=["Kids E-Mail"])


def test_checksum_mismatch_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loader must refuse data that is not the file recorded in SOURCES.md.
    import loopexp.sim.datasets as ds

    ds._hillstrom_frame.cache_clear()
    monkeypatch.setattr(ds, "HILLSTROM_SHA256", "0" * 64)
    try:
        with pytest.raises(DatasetIntegrityError, match="SHA-256"):
            load_hillstrom()
    finally:
        ds._hillstrom_frame.cache_clear()
