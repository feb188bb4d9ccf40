"""Opens after Apple MPP (issue 28): non-proxy effect, whole-audience effect, bounds, shares."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from statsmodels.stats.proportion import proportions_ztest

from loopexp.analysis.opens import analyze_opens, worst_case_bounds
from loopexp.core.errors import InputError


def _rows(variant: str, reader: str, human: int, machine: int, count: int) -> list[dict]:
    row = {
        "variant": variant,
        "reader_class": reader,
        "human_opens": human,
        "machine_opens": machine,
    }
    return [dict(row) for _ in range(count)]


def _frame() -> pd.DataFrame:
    rows = []
    # control: 200 non-proxy (40 human openers), 100 proxy (90 machine-only), 50 unknown none
    rows += _rows("A", "non_proxy", 1, 0, 40) + _rows("A", "non_proxy", 0, 0, 160)
    rows += _rows("A", "proxy", 0, 2, 90) + _rows("A", "proxy", 0, 0, 10)
    rows += _rows("A", "unknown", 0, 0, 50)
    # challenger: 200 non-proxy (50 openers, 10 of them with a machine open too), 100 proxy
    rows += _rows("B", "non_proxy", 2, 1, 10) + _rows("B", "non_proxy", 1, 0, 40)
    rows += _rows("B", "non_proxy", 0, 0, 150)
    rows += _rows("B", "proxy", 0, 1, 95) + _rows("B", "proxy", 0, 0, 5)
    rows += _rows("B", "unknown", 1, 0, 5) + _rows("B", "unknown", 0, 0, 45)
    return pd.DataFrame(rows)


def test_non_proxy_effect_matches_hand_delta_method() -> None:
    out = analyze_opens(_frame(), "A")
    (b,) = out.challengers
    pt, pc, n = 50 / 200, 40 / 200, 200
    se = math.sqrt(pt * (1 - pt) / (n * pc**2) + pt**2 * pc * (1 - pc) / (n * pc**4))
    assert b.non_proxy is not None
    assert b.non_proxy.n == 400
    assert b.non_proxy.rel_lift == pytest.approx(0.25, abs=1e-12)
    assert b.non_proxy.rel_ci_low == pytest.approx(0.25 - 1.959963984540054 * se, abs=1e-9)
    assert b.non_proxy.rel_ci_high == pytest.approx(0.25 + 1.959963984540054 * se, abs=1e-9)
    # whole audience: human openers 55/350 vs 40/350 (diluted toward 0 by proxy readers)
    assert b.whole_audience is not None
    assert b.whole_audience.rel_lift == pytest.approx(55 / 40 - 1, abs=1e-12)
    assert b.whole_audience.n == 700
    # same counts as statsmodels' two-proportion test sees them (independent of our code)
    z, _ = proportions_ztest([55, 40], [350, 350])
    assert z > 0


def test_worst_case_bounds_by_hand_and_shares() -> None:
    frame = _frame()
    out = analyze_opens(frame, "A")
    (b,) = out.challengers
    # A: human 40/350, masked (machine only) 90 -> rate in [40/350, 130/350]
    # B: human 55/350, masked 95 -> rate in [55/350, 150/350]
    assert b.bounds is not None
    assert b.bounds.diff_low == pytest.approx((55 - 130) / 350)
    assert b.bounds.diff_high == pytest.approx((150 - 40) / 350)
    assert b.bounds.rel_low == pytest.approx(55 / 130 - 1)
    assert b.bounds.rel_high == pytest.approx(150 / 40 - 1)
    assert b.bounds.masked_share == pytest.approx(185 / 700)
    # machine share of opens: A 180 / (40 + 180); B 105 / (10*3 + 40 + 5 + 95)
    assert out.machine_open_share["A"] == pytest.approx(180 / 220)
    assert out.machine_open_share["B"] == pytest.approx(105 / (20 + 40 + 5 + 10 + 95))
    assert out.reader_share["A"]["proxy"] == pytest.approx(100 / 350)
    # the observed whole-audience difference always lies inside the bounds
    observed = 55 / 350 - 40 / 350
    assert b.bounds.diff_low <= observed <= b.bounds.diff_high


def test_missing_data_is_never_evidence() -> None:
    frame = _frame()
    only_control = frame[frame["variant"] == "A"]
    out = analyze_opens(
        pd.concat([only_control, frame[(frame.variant == "B") & (frame.reader_class == "proxy")]]),
        "A",
    )
    (b,) = out.challengers
    assert b.non_proxy is None  # no non-proxy challenger recipients: no effect, not zero
    assert worst_case_bounds(only_control, "B", "A") is None
    no_opens = frame.assign(human_opens=0, machine_opens=0)
    (b,) = analyze_opens(no_opens, "A").challengers
    assert b.whole_audience is None and b.non_proxy is None
    assert analyze_opens(no_opens, "A").machine_open_share == {"A": None, "B": None}


def test_bad_table_is_refused_clearly() -> None:
    with pytest.raises(InputError, match="reader_class"):
        analyze_opens(_frame().assign(reader_class="apple"), "A")
    with pytest.raises(InputError, match="machine_opens"):
        analyze_opens(_frame().drop(columns="machine_opens"), "A")


def test_everyone_opening_is_no_evidence() -> None:
    frame = _frame()
    frame = frame[frame["human_opens"] > 0]  # both arms 100 % human openers: degenerate
    (b,) = analyze_opens(frame, "A").challengers
    assert b.non_proxy is None and b.whole_audience is None
