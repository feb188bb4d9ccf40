"""Lee (2009) bounds on the human-open effect (issue 28): R reference, hand values, wiring."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from loopexp.analysis.opens import analyze_opens, opens_section
from loopexp.report.opens import opens_html
from loopexp.stats.lee import lee_bounds_binary

VECTORS = Path(__file__).parent / "data" / "lee_bounds.json"  # made by lee_bounds.R


@pytest.mark.parametrize("case", json.loads(VECTORS.read_text()), ids=lambda c: c["name"])
def test_lee_bounds_agree_with_r_literal_trimming(case: dict) -> None:
    got = asdict(lee_bounds_binary(*case["counts"]))
    assert got.pop("trimmed_arm") == case["trimmed_arm"]
    for key, value in got.items():
        if case[key] is None:  # R writes an unbounded relative bound as null
            assert math.isinf(value), key
        else:
            assert value == pytest.approx(case[key], abs=1e-6), key


def _rows(variant: str, human: int, machine: int, count: int) -> list[dict]:
    row = {"variant": variant, "reader_class": "unknown", "human_opens": human}
    return [dict(row, machine_opens=machine) for _ in range(count)]


def _frame() -> pd.DataFrame:
    # A: 350 recipients, 40 human openers, 90 machine-only, 220 without any open
    # B: 350 recipients, 55 human openers (10 also machine), 95 machine-only, 200 without
    rows = _rows("A", 1, 0, 40) + _rows("A", 0, 2, 90) + _rows("A", 0, 0, 220)
    rows += _rows("B", 1, 1, 10) + _rows("B", 1, 0, 45) + _rows("B", 0, 1, 95)
    rows += _rows("B", 0, 0, 200)
    return pd.DataFrame(rows)


def test_lee_bounds_by_hand_inside_the_worst_case_bounds() -> None:
    (b,) = analyze_opens(_frame(), "A").challengers
    assert b.lee is not None and b.bounds is not None
    # visible: A 260/350, B 255/350: trim A's visible by 1 - 255/260; bounds (r, z shares):
    # [(r_B - r_A) / q_B, (z_A - z_B) / q_B] = [15/255, 20/255]
    assert b.lee.trimmed_arm == "control"
    assert b.lee.trimmed_share == pytest.approx(1 - 255 / 260)
    assert b.lee.diff_low == pytest.approx(15 / 255, abs=1e-12)
    assert b.lee.diff_high == pytest.approx(20 / 255, abs=1e-12)
    # A's always-visible open rate lies in [40/255, 1 - 220/255]: relative bounds
    assert b.lee.rel_low == pytest.approx((55 / 255) / (40 / 255) - 1, abs=1e-12)
    assert b.lee.rel_high == pytest.approx((55 / 255) / (35 / 255) - 1, abs=1e-12)
    assert b.bounds.diff_low < b.lee.ci_low < b.lee.diff_low < b.lee.diff_high
    assert b.lee.diff_high < b.lee.ci_high < b.bounds.diff_high


def test_no_opens_or_no_visible_recipient_is_no_evidence() -> None:
    frame = _frame()
    (b,) = analyze_opens(frame.assign(human_opens=0, machine_opens=0), "A").challengers
    assert b.lee is None  # nobody opened: no comparison, not "no difference"
    (b,) = analyze_opens(frame.assign(human_opens=0, machine_opens=1), "A").challengers
    assert b.lee is None  # every outcome hidden by the proxy
    assert lee_bounds_binary(0, 0, 10, 3, 5, 10) is None


def test_results_json_and_report_carry_the_lee_bounds() -> None:
    section = opens_section(_frame(), "A")
    lee = section["challengers"][0]["lee"]
    assert set(lee) >= {"diff_low", "diff_high", "ci_low", "ci_high", "rel_low", "rel_high"}
    assert json.loads(json.dumps(section, allow_nan=False)) == section  # JSON without NaN
    html = opens_html(SimpleNamespace(opens=section))
    assert "Lee bounds" in html and "+5.9 and +7.8 points" in html
    assert "the data cannot check this" in html
