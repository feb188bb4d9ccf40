"""Issue 27 follow-up: sequential cross-fitting, the procedure's sample plan, guardrails in the
choice, and a policy step that reads only the assignment columns it uses."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from loopexp.analysis.policy import POLICY_GROUP, exploration_view, explored_flags
from loopexp.core.errors import InputError
from loopexp.design.policy import PolicyCondition, PolicyRule, PolicySettings
from loopexp.design.spec import load_spec
from loopexp.learn.policy.estimators import (
    PolicyCell,
    planned_policy_recipients,
    planned_recipients,
    policy_power,
)
from loopexp.learn.policy.evaluate import LoggedData, cross_fit, evaluate_policies
from loopexp.learn.policy.files import logged_data
from loopexp.learn.policy.guardrails import GuardrailOutcome
from loopexp.metrics.definitions import HOLDOUT
from loopexp.metrics.features import recipient_outcomes
from loopexp.sim.policy import population, send
from loopexp.sim.simulate import simulate_campaign
from tests.conftest import DEMO_SPEC


def test_each_chunk_is_valued_under_rules_learned_on_earlier_chunks_only() -> None:
    """Changing the last chunk's outcomes changes no chunk's rules and no earlier chunk's score:
    what makes the chunks' errors uncorrelated (a martingale), hence the stacked interval valid."""
    data, _ = send(population(3_000, "segment_flip", seed=1), seed=2)
    fit = cross_fit(data, folds=4, seed=0)
    last = fit.fold == 3
    flipped = np.where(last, 1.0 - data.y, data.y)
    other = LoggedData(
        data.frame, data.features, data.actions, data.action, data.propensity, flipped
    )
    refit = cross_fit(other, folds=4, seed=0)
    assert refit.rules == fit.rules
    for name, by in fit.scores.items():
        assert np.isnan(by["aipw"][fit.fold == 0]).all()  # the first chunk only teaches
        earlier = (fit.fold > 0) & ~last
        assert np.array_equal(by["aipw"][earlier], refit.scores[name]["aipw"][earlier])
        assert not np.array_equal(by["aipw"][last], refit.scores[name]["aipw"][last])
    assert fit.weights == pytest.approx([1 / 3] * 3)


def test_the_plan_includes_the_cost_of_learning() -> None:
    # Two halves with opposite winners. Were the rules always learned right, the cost would be
    # the teaching chunk (n = n_scored × K / (K − 1)) and the two comparisons, over arm a (the
    # half moved to b) and over arm b (the half kept on a): independent halves, each needing
    # power √0.8. Rules learned on the first chunk alone are sometimes wrong: a little more.
    easy = [PolicyCell(0.5, 0.05, 0.5), PolicyCell(0.5, -0.05, 0.5)]
    sd = np.sqrt(0.5 * (0.5**2 + 0.05**2) - 0.025**2)
    z = NormalDist().inv_cdf(1 - 0.0125) + NormalDist().inv_cdf(np.sqrt(0.8))
    perfect = (z * sd / 0.025) ** 2 * 5 / 4
    assert perfect <= planned_policy_recipients(easy, folds=5) <= 1.1 * perfect
    # A small gain in a small cell beside a loss: rules learned on few recipients err, so more.
    cells = [
        PolicyCell(0.3, 0.006, 0.25),
        PolicyCell(0.2, 0.002, 0.15),
        PolicyCell(0.5, -0.004, 0.3),
    ]
    n = planned_policy_recipients(cells, folds=5)
    oracle = planned_recipients(
        0.3 * 0.006 + 0.2 * 0.002, float(np.sqrt((0.3 * 0.25**2 + 0.2 * 0.15**2) / 1.0)), 0.025
    )
    assert n > 1.25 * oracle
    assert policy_power(n, cells) >= 0.8 > policy_power(int(0.8 * n), cells)


def _guarded_send(n: int, tolerance: float) -> LoggedData:
    """Segment p clicks b far more, q clicks a; b raises unsubscribes ×10 everywhere."""
    rng = np.random.default_rng(5)
    segment = np.where(rng.random(n) < 0.3, "p", "q")
    action = rng.integers(0, 2, n)
    click = np.where(
        segment == "p", np.where(action == 1, 0.12, 0.05), np.where(action == 1, 0.06, 0.12)
    )
    unsub = np.where(action == 1, 0.02, 0.002)
    return LoggedData(
        pd.DataFrame({"segment": segment}),
        (),
        ("a", "b"),
        action,
        np.full(n, 0.5),
        (rng.random(n) < click).astype(float),
        (
            GuardrailOutcome(
                "unsubscribe_rate", (rng.random(n) < unsub).astype(float), True, tolerance
            ),
        ),
    )


def test_a_policy_that_raises_unsubscribes_beyond_the_tolerance_is_not_chosen() -> None:
    vetoed = evaluate_policies(_guarded_send(10_000, tolerance=0.0))
    segment = next(c for c in vetoed.candidates if c.kind == "segment")
    assert segment.gain.ci_low > 0  # it gains clicks ...
    (guard,) = segment.guardrails
    assert guard.vetoed and guard.diff.ci_low > 0  # ... by sending more unsubscribes
    assert vetoed.chosen.kind == "single"
    assert "worsens a guardrail" in vetoed.reason and "unsubscribe_rate" in vetoed.reason
    shown = vetoed.to_dict()["candidates"][1]["guardrails"][0]
    assert shown["vetoed"] and shown["ci_low"] <= shown["value"] <= shown["ci_high"]
    # The send found the gain at 10,000 with room to spare: its own plan for 80 % power is lower.
    assert vetoed.planned_recipients is not None and 1_000 < vetoed.planned_recipients < 10_000
    assert vetoed.to_dict()["planned_recipients"] == vetoed.planned_recipients
    # A tolerance wider than the rise (10 × the single arm's 0.2 %): the policy is chosen.
    tolerated = evaluate_policies(_guarded_send(10_000, tolerance=10.0))
    assert tolerated.chosen.kind == "segment", tolerated.reason
    assert not tolerated.chosen.guardrails[0].vetoed


@pytest.fixture(scope="module")
def wide_send(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    """A send whose assignment has a holdout and columns a policy never reads."""
    folder = tmp_path_factory.mktemp("policy-wide")
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 3_000, seed=3)
    events, assignment = campaign.write(folder)
    frame = pd.read_parquet(assignment)
    frame.loc[frame.index[:200], "variant_id"] = HOLDOUT
    frame["notes"] = "x" * 50  # a wide column the policy must leave in DuckDB
    frame["propensity"] = 1 / 3
    frame.to_parquet(assignment)
    return events, assignment, frame


def test_the_policy_step_reads_only_what_it_uses_and_gets_the_same_outcomes(wide_send) -> None:
    events, assignment, frame = wide_send
    full = recipient_outcomes(events, assignment, "click_rate").table
    cut = recipient_outcomes(
        events,
        assignment,
        "click_rate",
        columns=("recipient_key", "variant_id"),
        drop_variant=HOLDOUT,
    )
    assert list(cut.table.columns) == ["recipient_key", "variant_id", "y"]
    assert cut.assigned == len(frame) and len(cut.table) == len(frame) - 200
    expected = full[full["variant_id"] != HOLDOUT].set_index("recipient_key")["y"].sort_index()
    assert cut.table.set_index("recipient_key")["y"].sort_index().equals(expected)
    spec = load_spec(DEMO_SPEC)
    data, notes = logged_data(spec, events, assignment)
    assert f"{len(frame):,} assigned recipients" in notes[0]
    assert len(data.y) == len(frame) - 200
    by_key = dict(zip(data.frame["recipient_key"], data.y, strict=True))
    assert all(by_key[k] == v for k, v in expected.items())
    (guard,) = data.guardrails  # the spec's unsubscribe_rate, per mailed recipient
    assert guard.metric == "unsubscribe_rate" and guard.worse_is_up and len(guard.y) == len(data.y)


def test_the_exploration_view_relabels_in_duckdb_as_pandas_did(tmp_path: Path) -> None:
    """A policy iteration's analysis: the rules' recipients relabelled by DuckDB into a Parquet
    copy (the assignment never enters pandas), the same rows and groups as the pandas path."""
    spec = load_spec(DEMO_SPEC)
    rules = [
        PolicyRule(
            when=[PolicyCondition(feature="segment", op="==", value="prospect")], action="personal"
        ),
        PolicyRule(action="control"),
    ]
    spec = spec.model_copy(
        update={"policy": PolicySettings(kind="segment", exploration=0.2, rules=rules)}
    )
    campaign = simulate_campaign(spec, 3_000, seed=6)
    _, path = campaign.write(tmp_path)
    view = exploration_view(spec, path)
    assert view is not None and isinstance(view.assignment, Path)
    got = pd.read_parquet(view.assignment).set_index("recipient_key").sort_index()
    frame = pd.read_parquet(path)
    flags = explored_flags(spec, frame, str(path))
    expected = np.where(flags, frame["variant_id"].astype(str), POLICY_GROUP)
    want = pd.Series(expected, index=frame["recipient_key"]).sort_index()
    assert got["variant_id"].tolist() == want.tolist()
    assert (got["variant_id"] == POLICY_GROUP).mean() == pytest.approx(0.8, abs=0.03)
    view.close()
    assert not view.assignment.exists()
    frame["explored"] = frame["explored"].astype(str)
    frame.loc[frame.index[7], "explored"] = "maybe"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="explored must be true/false; 1 row"):
        exploration_view(spec, tmp_path / "bad.csv")


def test_recipient_outcomes_come_in_one_order_whatever_the_files_order(wide_send, tmp_path) -> None:
    """The folds are a seeded permutation of the rows: the rows' order must not depend on how
    the assignment file happens to be ordered (or on DuckDB's threads), or a re-run of the same
    send could learn and value another policy."""
    events, assignment, frame = wide_send
    shuffled = tmp_path / "shuffled.parquet"
    frame.sample(frac=1.0, random_state=11).to_parquet(shuffled, index=False)
    first = recipient_outcomes(events, assignment, "click_rate").table
    again = recipient_outcomes(events, shuffled, "click_rate").table
    pd.testing.assert_frame_equal(first, again)
