"""Adaptive allocation: Thompson weights with a fixed control share and a floor per arm."""

from __future__ import annotations

import numpy as np
import pytest

from loopexp.analysis.results import (
    DataInfo,
    Decision,
    ExperimentInfo,
    ExperimentResults,
    MetricValue,
    SRMResult,
    Status,
    VariantResult,
)
from loopexp.assignment.assign import assign
from loopexp.design.spec import ExperimentSpec, load_spec
from loopexp.learn.allocation import AllocationError, thompson_weights
from loopexp.learn.iteration import next_spec
from loopexp.sim.simulate import make_recipients
from loopexp.stats.srm import srm_check
from tests.conftest import DEMO_SPEC


def _results(spec: ExperimentSpec, clicks: dict[str, tuple[int, int]]) -> ExperimentResults:
    return ExperimentResults(
        experiment=ExperimentInfo.from_spec(spec),
        data=DataInfo(source="", fingerprint="", recipients=0, events=0, quarantined=0),
        srm=SRMResult(p_value=1.0, ok=True, expected={}, observed={}),
        variants=[
            VariantResult(
                id=v,
                is_control=v == spec.control,
                n=n,
                metrics={"click_rate": MetricValue(value=x / n, numerator=x, denominator=n)},
            )
            for v, (x, n) in clicks.items()
        ],
        comparisons=[],
        decision=Decision(
            status=Status.KEEP_TESTING, winner=None, primary_metric="click_rate", reasons=["x"]
        ),
    )


def _four_arm_spec() -> ExperimentSpec:
    data = load_spec(DEMO_SPEC).model_dump(mode="json")
    data["variants"].append({"id": "question", "subject": "?"})
    data["backlog"] = []
    return ExperimentSpec.model_validate(data)


def test_better_arm_gets_more_control_share_fixed_floor_held() -> None:
    spec = _four_arm_spec()
    res = _results(
        spec,
        {
            "control": (300, 10_000),
            "personal": (380, 10_000),
            "urgency": (290, 10_000),
            "question": (300, 10_000),
        },
    )
    arms = ["control", "personal", "urgency", "question"]
    w = thompson_weights(spec, res, arms, "control", floor=0.05)
    assert w["control"] == pytest.approx(0.25)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["personal"] > 0.5 and min(w["urgency"], w["question"]) == pytest.approx(0.05)
    top_two = thompson_weights(spec, res, arms, "control", floor=0.05, top_two=True)
    # top-two keeps sampling the runner-up: the leader gets less than under plain Thompson
    assert top_two["personal"] < w["personal"]


def test_equal_posteriors_give_equal_weights_and_new_arms_their_share() -> None:
    spec = _four_arm_spec()
    res = _results(spec, {"control": (300, 10_000), "personal": (300, 10_000)})
    w = thompson_weights(spec, res, ["control", "personal", "new1", "new2"], "control")
    assert w["control"] == pytest.approx(0.25)
    # one arm with data cannot be ranked against nothing: everyone gets the equal share
    assert w["personal"] == pytest.approx(0.25) and w["new1"] == pytest.approx(0.25)


def test_floor_that_does_not_fit_is_refused() -> None:
    spec = _four_arm_spec()
    with pytest.raises(AllocationError, match="lower the floor"):
        thompson_weights(spec, None, ["control", "a", "b", "c"], "control", floor=0.3)


def test_next_spec_with_adaptive_weights_is_assigned_and_checked_against_them() -> None:
    spec = load_spec(DEMO_SPEC)
    res = _results(
        spec, {"control": (300, 10_000), "personal": (390, 10_000), "urgency": (300, 10_000)}
    )
    arms = [v.id for v in spec.variants]
    w = thompson_weights(spec, res, arms, "control", floor=0.1)
    nxt = next_spec(spec, res, weights=w)
    shares = nxt.expected_shares()
    assert shares["control"] == pytest.approx(1 / 3)
    assert shares["personal"] > 0.45
    # the assignment follows the unequal weights, and the SRM check (against the spec's weights)
    # passes on it: the analysis stays valid
    assignment = assign(make_recipients(30_000, seed=5), nxt)
    counts = assignment["variant_id"].value_counts().to_dict()
    assert srm_check(counts, shares, 0.001).ok
    # ... and flags the same counts judged against equal weights
    assert not srm_check(counts, {a: 1 / 3 for a in arms}, 0.001).ok
    assert np.isclose(sum(shares.values()), 1.0)
