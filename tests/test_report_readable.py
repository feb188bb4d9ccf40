"""Results in plain words: percentages, words for statuses and metrics, no raw field names."""

from __future__ import annotations

import re

import pytest

from loopexp import TrueEffects, analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import Status
from loopexp.design.plan import plan_experiment
from loopexp.report.views import (
    STATUS_WORDS,
    decision_summary,
    lift_plot,
    mde_curve_plot,
    plan_summary,
    readable_comparisons,
    readable_segment_lifts,
    readable_variants,
)
from tests.conftest import DEMO_SPEC

RAW_NAMES = ("p_value_adjusted", "rel_lift", "rel_ci_low", "prob_beat_control", "click_rate")
PERCENT = re.compile(r"^[+-]?\d+\.\d%$")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory):
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 9_000, TrueEffects(open={"personal": 1.8}), seed=11)
    events, assignment = campaign.write(tmp_path_factory.mktemp("sim"))
    return analyze_files(spec, events, assignment)[1]


def _all_text(frame) -> str:
    return frame.to_html()


def test_every_status_has_words() -> None:
    assert set(STATUS_WORDS) == set(Status)


def test_comparisons_read_as_percentages_and_words(results) -> None:
    frame = readable_comparisons(results, alpha=0.05)
    text = _all_text(frame)
    assert not any(raw in text for raw in RAW_NAMES)
    click = frame.loc[("click rate", "personal")]
    assert PERCENT.match(click["lift"]) and click["lift"].startswith("+")
    lift = results.comparison("click_rate", "personal").rel_lift
    assert click["lift"] == f"{lift:+.1%}"
    level = results.comparison("click_rate", "personal").ci_level
    assert re.match(
        rf"^[+-]?\d+\.\d% to [+-]?\d+\.\d% \({100 * level:.3g}%\)$", click["interval of the lift"]
    )
    assert click["significant"] == "yes"
    assert re.match(r"^(>99%|<1%|\d{1,2}%)$", click["chance to beat control"])
    assert readable_comparisons(results, ["click_rate"]).index.get_level_values(
        0
    ).unique().tolist() == ["click rate"]


def test_significance_follows_the_given_alpha(results) -> None:
    p = results.comparison("click_rate", "personal").p_value_adjusted
    strict = readable_comparisons(results, alpha=p / 2).loc[("click rate", "personal")]
    assert strict["significant"] == "no"


def test_variants_and_segments_read_as_percentages(results) -> None:
    variants = readable_variants(results, ["click_rate", "revenue_per_delivered"])
    assert variants.loc["control", "role"] == "control"
    assert variants["click rate"].str.match(r"^\d+\.\d\d%$").all()
    segments = readable_segment_lifts(results, "click_rate")
    assert segments["lift"].str.match(PERCENT).all()
    assert "new customer" in segments.index.get_level_values(0)


def test_decision_summary_says_what_to_do_and_why(results) -> None:
    text = decision_summary(results)
    d = results.decision
    assert text.startswith(f"Decision: {STATUS_WORDS[d.status]}: personal.")
    assert f"{d.rel_lift:+.1%}" in text and "click rate" in text
    assert f"{100 * d.ci_level:.3g}% interval" in text  # the level the decision's test used
    assert all(reason in text for reason in d.reasons)


def test_plan_summary_and_plots(results) -> None:
    plan = plan_experiment(
        load_spec(DEMO_SPEC), 0.04, recipients_per_day=20_000, audience_size=1000
    )
    text = plan_summary(plan)
    assert f"{plan.per_variant:,} recipients" in text and f"{plan.days} day(s)" in text
    assert "a larger list would help" in text
    assert mde_curve_plot(plan).axes[0].get_xscale() == "log"
    labels = [t.get_text() for t in lift_plot(results).axes[0].texts]
    assert f"{results.comparison('click_rate', 'personal').rel_lift:+.1%}" in labels
