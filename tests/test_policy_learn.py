"""Candidate policies, cross-fitted values, the choice and the rules (issue 27)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopexp.assignment.policy import apply_rules, policy_groups
from loopexp.design.policy import PolicyCondition, PolicyRule, PolicySettings
from loopexp.learn.policy.estimators import PolicyError
from loopexp.learn.policy.evaluate import LoggedData, evaluate_policies
from loopexp.sim.policy import population, send


def test_segment_flipped_winners_are_found_with_readable_rules():
    pop = population(120_000, "segment_flip", seed=11)
    data, _ = send(pop, seed=12)
    report = evaluate_policies(data, seed=1)
    assert report.chosen.kind == "segment"
    assert report.chosen.rules[-1].words() == "everyone → variant a"
    assert {r.words() for r in report.chosen.rules[:-1]} == {
        "inactive → variant b",
        "prospect → variant b",
    }
    segment = report.candidates[1]
    assert segment.gain.ci_low > 0
    # The chosen policy's true value is above the best single arm's.
    assert pop.value(report.chosen.rules) > pop.value(report.candidates[0].rules)
    out = report.to_dict()
    assert set(out) >= {"chosen", "candidates", "method", "folds"}
    assert out["method"] == "aipw" and out["folds"] == 5
    assert set(out["chosen"]) >= {"name", "kind", "rules"}
    keys = {"name", "kind", "value", "ci_low", "ci_high", "gain", "gain_ci_low", "gain_ci_high"}
    assert all(keys <= set(c) for c in out["candidates"])


def test_without_heterogeneity_the_single_winner_is_sent_saying_so():
    pop = population(40_000, "none", seed=5)
    data, _ = send(pop, seed=6)
    report = evaluate_policies(data, seed=2)
    assert report.chosen.kind == "single"
    assert "no candidate's gain" in report.reason
    assert report.candidates[0].gain.value == 0 and report.candidates[0].gain.se == 0


def test_a_feature_policy_is_learned_by_the_tree():
    pop = population(150_000, "click_hour", seed=3)
    data, _ = send(pop, seed=4)
    report = evaluate_policies(data, seed=0)
    tree = report.candidates[2]
    assert tree.kind == "tree" and tree.gain.ci_low > 0
    assert any("past click hour" in r.words() for r in tree.rules)


def test_identical_candidates_are_never_evidence():
    # One segment only: the per-segment policy is the single arm, its gain exactly 0, not chosen.
    pop = population(5_000, "segment_flip", seed=1)
    frame = pop.frame.assign(segment="existing_customer")
    data, _ = send(pop, seed=2)
    data = LoggedData(frame, (), data.actions, data.action, data.propensity, data.y)
    report = evaluate_policies(data, seed=0)
    assert report.candidates[1].gain.value == 0
    assert report.chosen.kind == "single"


def test_too_little_data_is_a_clear_error():
    frame = pd.DataFrame({"segment": ["inactive"] * 4})
    with pytest.raises(PolicyError, match="at least 2 recipients"):
        LoggedData(frame, (), ("a", "b"), np.array([0, 0, 0, 1]), np.full(4, 0.5), np.zeros(4))
    pop = population(30, "none", seed=1)
    data, _ = send(pop, seed=2)
    with pytest.raises(PolicyError, match="30 recipients for 5 folds"):
        evaluate_policies(data)


def test_rules_apply_first_match_and_read_in_words():
    rules = [
        PolicyRule(
            when=[PolicyCondition(feature="segment", op="==", value="inactive")], action="b"
        ),
        PolicyRule(
            when=[PolicyCondition(feature="past_click_hour", op=">=", value=17)], action="c"
        ),
        PolicyRule(action="a"),
    ]
    frame = pd.DataFrame(
        {"segment": ["inactive", "prospect", "prospect"], "past_click_hour": [20, 18, -1]}
    )
    assert apply_rules(rules, frame).tolist() == ["b", "c", "a"]
    assert [r.words() for r in rules] == [
        "inactive → variant b",
        "past click hour ≥ 17 → variant c",
        "everyone → variant a",
    ]


def test_policy_exploration_is_uniform_and_propensities_are_recorded():
    policy = PolicySettings(
        rules=[
            PolicyRule(
                when=[PolicyCondition(feature="segment", op="==", value="inactive")], action="b"
            ),
            PolicyRule(action="a"),
        ],
        exploration=0.2,
    )
    n = 200_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"segment": rng.choice(["inactive", "prospect"], n)})
    variant, propensity, explored = policy_groups(
        policy, frame, ["a", "b"], rng.random(n), rng.random(n)
    )
    assert explored.mean() == pytest.approx(0.2, abs=0.005)
    inactive = frame["segment"].to_numpy() == "inactive"
    assert (variant[inactive] == "b").mean() == pytest.approx(0.9, abs=0.005)
    assert set(np.round(propensity, 6)) == {0.9, 0.1}
    assert np.all(propensity[variant == np.where(inactive, "b", "a")] == pytest.approx(0.9))


def test_a_policy_must_end_with_everyone():
    with pytest.raises(ValueError, match="last policy rule"):
        PolicySettings(
            rules=[
                PolicyRule(
                    when=[PolicyCondition(feature="segment", op="==", value="inactive")],
                    action="b",
                )
            ]
        )
