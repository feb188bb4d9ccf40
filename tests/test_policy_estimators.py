"""Off-policy estimators (issue 27): AIPW by hand, IPW unbiased with known propensities."""

from __future__ import annotations

import numpy as np
import pytest

from loopexp.core.errors import InputError
from loopexp.learn.policy.estimators import (
    PolicyError,
    aipw_matrix,
    aipw_scores,
    check_logged,
    dm_scores,
    ipw_scores,
    mean_interval,
    planned_recipients,
)


def test_aipw_ipw_dm_on_a_case_computed_by_hand():
    # Four recipients, actions a=0 / b=1; the policy sends r0, r1 to b and r2, r3 to a.
    y = np.array([1.0, 0.0, 1.0, 0.0])
    action = np.array([1, 0, 0, 1])
    p = np.array([0.5, 0.25, 0.8, 0.5])
    mu = np.array([[0.2, 0.4], [0.1, 0.3], [0.5, 0.6], [0.0, 0.1]])
    pi = np.array([1, 1, 0, 0])
    # r0: took b = π → 0.4 + (1 − 0.4)/0.5 = 1.6;  r1: took a ≠ π → μ(b) = 0.3
    # r2: took a = π → 0.5 + (1 − 0.5)/0.8 = 1.125;  r3: took b ≠ π → μ(a) = 0.0
    assert aipw_scores(y, action, p, mu, pi) == pytest.approx([1.6, 0.3, 1.125, 0.0])
    assert ipw_scores(y, action, p, pi) == pytest.approx([2.0, 0.0, 1.25, 0.0])
    assert dm_scores(mu, pi) == pytest.approx([0.4, 0.3, 0.5, 0.0])
    gamma = aipw_matrix(y, action, p, mu)
    # Each recipient's AIPW score under every action: the policy's score is the column it picks.
    assert gamma[np.arange(4), pi] == pytest.approx(aipw_scores(y, action, p, mu, pi))
    assert gamma[1] == pytest.approx([0.1 + (0 - 0.1) / 0.25, 0.3])


def test_mean_interval_is_the_clt_interval():
    scores = np.array([1.6, 0.3, 1.125, 0.0])
    est = mean_interval(scores, alpha=0.05)
    se = np.std(scores, ddof=1) / 2
    assert est.value == pytest.approx(0.75625)
    assert est.se == pytest.approx(se)
    assert est.ci_low == pytest.approx(0.75625 - 1.959963985 * se)
    assert est.ci_high == pytest.approx(0.75625 + 1.959963985 * se)


def _truth(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random(n)
    truth = np.column_stack([0.05 + 0.1 * x, 0.12 - 0.08 * x])  # b better for small x
    return x, truth


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.2)], ids=["equal", "thompson-like"])
def test_ipw_and_aipw_are_unbiased_with_known_propensities(weights):
    """Over many sends, IPW and AIPW (with a deliberately wrong outcome model) average to the
    policy's true value; the direct method with that wrong model does not."""
    rng = np.random.default_rng(7)
    n, reps = 2_000, 400
    x, truth = _truth(n, rng)
    pi = (x < 0.4).astype(int)  # b for small x: the better action for x < 0.35
    true_value = truth[np.arange(n), pi].mean()
    wrong_mu = np.full((n, 2), 0.2)  # far from the truth on purpose
    p_b = weights[1]
    ipw, aipw, dm = [], [], []
    for _ in range(reps):
        action = (rng.random(n) < p_b).astype(int)
        p = np.where(action == 1, p_b, 1 - p_b)
        y = (rng.random(n) < truth[np.arange(n), action]).astype(float)
        ipw.append(ipw_scores(y, action, p, pi).mean())
        aipw.append(aipw_scores(y, action, p, wrong_mu, pi).mean())
        dm.append(dm_scores(wrong_mu, pi).mean())
    for estimates in (ipw, aipw):
        mc_error = np.std(estimates, ddof=1) / np.sqrt(reps)
        assert abs(np.mean(estimates) - true_value) < 4 * mc_error
    assert abs(np.mean(dm) - true_value) > 0.05  # the wrong model's bias, which AIPW removes


def test_an_interval_needs_two_finite_scores():
    with pytest.raises(PolicyError, match="at least 2 recipients"):
        mean_interval(np.array([1.0]))
    with pytest.raises(InputError):
        mean_interval(np.array([1.0, np.nan, 0.0]))


def test_propensities_outside_zero_one_are_refused():
    with pytest.raises(PolicyError, match=r"propensity outside \(0, 1\]"):
        check_logged(np.array([0, 1]), np.array([0.5, 0.0]), np.array([1.0, 0.0]))
    with pytest.raises(PolicyError, match="one value per recipient"):
        check_logged(np.array([0, 1]), np.array([0.5]), np.array([1.0, 0.0]))


def test_planned_recipients_is_the_normal_formula():
    # ((1.959964 + 0.841621) · 0.2 / 0.004)² = 19,622.2… → 19,623
    assert planned_recipients(0.004, 0.2) == 19_623
    assert planned_recipients(0.004, 0.2, alpha=0.025) > 19_623
    with pytest.raises(PolicyError, match="positive gain"):
        planned_recipients(0.0, 0.2)


def test_realised_gain_covers_the_true_gain_and_is_always_valid():
    """A deployed segment policy with 20 % exploration: the paired IPW gain over its default arm
    covers the true gain, and its always-valid interval is wider than the CLT one."""
    import yaml

    from loopexp.design.spec import parse_spec
    from loopexp.learn.policy.step import realised_gain
    from loopexp.sim.policy import population, send
    from tests.conftest import DEMO_SPEC

    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["variants"] = [
        {"id": "a", "subject": "A"},
        {"id": "b", "subject": "B"},
    ]
    data["control"] = "a"
    data["policy"] = {
        "exploration": 0.2,
        "rules": [
            {"when": [{"feature": "segment", "op": "==", "value": s}], "action": "b"}
            for s in ("prospect", "inactive")
        ]
        + [{"action": "a"}],
    }
    spec = parse_spec(yaml.safe_dump(data), "deployed.yaml")
    pop = population(200_000, "segment_flip", seed=3)
    follows_b = np.isin(pop.frame["segment"], ["prospect", "inactive"])
    p_b = np.where(follows_b, 0.8 + 0.1, 0.1)
    propensity = np.column_stack([1 - p_b, p_b])
    logged, _ = send(pop, seed=4, propensity=propensity)
    gain = realised_gain(spec, logged)
    truth = pop.value(spec.policy.rules) - pop.value(spec.policy.rules[-1:])
    assert gain.ci_low < truth < gain.ci_high
    # The fixed-horizon (CLT) interval of the same paired scores is narrower: always-valid costs.
    pi = np.where(follows_b, 1, 0)
    diff = ipw_scores(logged.y, logged.action, logged.propensity, pi) - ipw_scores(
        logged.y, logged.action, logged.propensity, np.zeros_like(pi)
    )
    clt = mean_interval(diff)
    assert clt.value == pytest.approx(gain.value)
    assert gain.ci_high - gain.ci_low > 1.5 * (clt.ci_high - clt.ci_low)
