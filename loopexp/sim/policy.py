"""Recipients with known per-recipient truth for policy learning (issue 27).

Each simulated recipient has a lifecycle segment and the pre-treatment features the engine computes
(recency, frequency, tenure, past click hour, past machine-open status), and a true click
probability under every variant. Scenarios set how the variants' effects vary:

- ``none``: no heterogeneity — ``b`` lifts clicks by the same factor for everyone;
- ``segment_flip``: ``b`` wins among prospects and inactive customers and loses among new and
  existing ones (the winner flips by segment, at realistic sizes: ×1.3 / ×0.85);
- ``click_hour``: ``b`` (an evening send) wins for evening clickers (×1.5), loses for the others
  (×0.85).

The true value of any policy is its mean true click probability over a large reference population
(:func:`true_value`), which the calibration compares the estimates with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from loopexp.assignment.policy import apply_rules
from loopexp.design.policy import PolicyRule
from loopexp.learn.policy.evaluate import LoggedData

FEATURES = ("recency_days", "frequency", "tenure_days", "past_click_hour", "machine_open")
SEGMENTS = ("prospect", "new_customer", "existing_customer", "inactive")
SHARES = (0.30, 0.15, 0.35, 0.20)
#: Click probability of variant ``a`` per segment at average engagement.
BASE_CLICK = {"prospect": 0.03, "new_customer": 0.06, "existing_customer": 0.07, "inactive": 0.015}
SCENARIOS = ("none", "segment_flip", "click_hour")


@dataclass(frozen=True)
class PolicyPopulation:
    """Recipients (``frame``: segment and features) and their true click probability per action."""

    frame: pd.DataFrame
    actions: tuple[str, ...]
    truth: np.ndarray
    """n × actions: P(click | recipient, action)."""

    def value(self, rules: list[PolicyRule]) -> float:
        """Mean true click probability of these recipients under ``rules``."""
        pi = _codes(apply_rules(rules, self.frame), self.actions)
        return float(self.truth[np.arange(len(pi)), pi].mean())


def population(n: int, scenario: str = "segment_flip", seed: int = 0) -> PolicyPopulation:
    """``n`` recipients with features and per-action truth under ``scenario``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r}: choose one of {SCENARIOS}")
    rng = np.random.default_rng(seed)
    segment = rng.choice(np.array(SEGMENTS, dtype=object), size=n, p=SHARES)
    frequency = rng.poisson(np.where(segment == "inactive", 0.3, 2.0))
    clicked = frequency > 0
    recency = np.where(clicked, rng.integers(1, 90, n), rng.integers(90, 720, n)).astype(float)
    tenure = np.where(segment == "prospect", rng.integers(1, 60, n), rng.integers(60, 2000, n))
    hour = np.where(clicked, rng.choice(np.arange(6, 24), n), -1).astype(float)
    machine = (rng.random(n) < 0.45).astype(float)
    frame = pd.DataFrame(
        {
            "segment": segment,
            "recency_days": recency,
            "frequency": frequency.astype(float),
            "tenure_days": tenure.astype(float),
            "past_click_hour": hour,
            "machine_open": machine,
        }
    )
    base = np.array([BASE_CLICK[s] for s in segment]) * (0.7 + 0.15 * np.minimum(frequency, 4))
    lift = _lift_b(scenario, segment, hour)
    truth = np.column_stack([base, np.clip(base * lift, 0, 1)])
    return PolicyPopulation(frame, ("a", "b"), truth)


def _lift_b(scenario: str, segment: np.ndarray, hour: np.ndarray) -> np.ndarray:
    if scenario == "none":
        return np.full(len(segment), 1.05)
    if scenario == "segment_flip":
        wins = (segment == "prospect") | (segment == "inactive")
        return np.where(wins, 1.3, 0.85)
    return np.where(hour >= 17, 1.5, 0.85)


def send(
    pop: PolicyPopulation, seed: int, propensity: np.ndarray | None = None
) -> tuple[LoggedData, np.ndarray]:
    """A randomised send to ``pop``: the logged data and each recipient's action.

    Each action is drawn with ``propensity`` (n × actions, default equal), the click from the truth.
    """
    rng = np.random.default_rng(seed)
    n, k = pop.truth.shape
    probs = np.full((n, k), 1.0 / k) if propensity is None else propensity
    action = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, k - 1)
    y = (rng.random(n) < pop.truth[np.arange(n), action]).astype(float)
    data = LoggedData(pop.frame, FEATURES, pop.actions, action, probs[np.arange(n), action], y)
    return data, action


def _codes(labels: np.ndarray, actions: tuple[str, ...]) -> np.ndarray:
    return pd.Categorical(labels, categories=list(actions)).codes.astype(np.int64)
