"""Guardrails in the policy choice: a policy must not buy its gain with unsubscribes (issue 27).

For every guardrail of the spec (e.g. ``unsubscribe_rate``) the recipients' per-recipient value is
valued off-policy exactly like the primary outcome: AIPW scores under each candidate, on the same
held-out chunks, with its CLT interval, and the paired difference from the best single arm. The
spec's own rule then applies (:class:`loopexp.design.parts.Guardrail`), with the margin relative to
the single arm's guardrail value:

- ``harm``: the candidate is vetoed when the difference interval lies wholly beyond the margin
  (the data show a worsening beyond the tolerance);
- ``non_inferiority``: vetoed unless the interval lies wholly inside the margin.

The interval is the two-sided one at the spec's level (each side α/2), as in the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopexp.learn.policy.estimators import Estimate, mean_interval


@dataclass(frozen=True)
class GuardrailOutcome:
    """One guardrail's per-recipient values ``y`` (aligned with the logged data) and its rule."""

    metric: str
    y: np.ndarray
    worse_is_up: bool
    """True for a metric where an increase is bad (unsubscribes, complaints)."""
    max_relative_increase: float = 0.0
    mode: str = "harm"


@dataclass(frozen=True)
class GuardrailValue:
    """A candidate's guardrail value, its difference from the single arm's, and the verdict."""

    metric: str
    value: Estimate
    diff: Estimate
    margin: float
    """The tolerated worsening in the metric's units (relative margin × the single arm's value)."""
    vetoed: bool

    def to_dict(self) -> dict[str, object]:
        """JSON beside the candidate's value and gain."""
        return {
            "metric": self.metric,
            "value": self.value.value,
            "ci_low": self.value.ci_low,
            "ci_high": self.value.ci_high,
            "diff": self.diff.value,
            "diff_ci_low": self.diff.ci_low,
            "diff_ci_high": self.diff.ci_high,
            "margin": self.margin,
            "vetoed": self.vetoed,
        }

    def words(self) -> str:
        """``unsubscribe_rate +0.0012 [+0.0004, +0.0020] vs the best single arm (tolerance 0)``."""
        d = self.diff
        return (
            f"{self.metric} {d.value:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] vs the best single "
            f"arm (tolerance {self.margin:.4f})"
        )


def guardrail_value(
    outcome: GuardrailOutcome, scores: np.ndarray, single: np.ndarray, alpha: float
) -> GuardrailValue:
    """Judge one candidate's guardrail from its held-out AIPW ``scores`` and the single arm's."""
    base = mean_interval(single, alpha)
    value = mean_interval(scores, alpha)
    delta = scores - single
    if not np.any(delta):  # the same policy as the single arm: nothing to judge
        diff = Estimate(0.0, 0.0, 0.0, 0.0, delta.size)
    else:
        diff = mean_interval(delta, alpha)
    margin = outcome.max_relative_increase * abs(base.value)
    sign = 1.0 if outcome.worse_is_up else -1.0
    worse_low, worse_high = sorted((sign * diff.ci_low, sign * diff.ci_high))
    if diff.se == 0:
        vetoed = False
    elif outcome.mode == "non_inferiority":
        vetoed = not worse_high < margin
    else:
        vetoed = worse_low > margin
    return GuardrailValue(outcome.metric, value, diff, margin, vetoed)
