"""A scheduled run's policy step: learn the next policy, measure the deployed one (issue 27).

For a spec with a ``policy:`` section, ``loopexp run`` calls :func:`policy_step` on the run's own
events and assignment, keeps the result as ``policy.json`` in the attempt (logged with the run),
and :func:`loopexp.learn.iteration.next_iteration` writes the chosen policy into the next spec.

When the spec already deploys rules, the step also measures their *realised* gain over the best
single arm (the rules' last action) on this send: the paired inverse-propensity estimate from the
recorded propensities — the exploration share is what makes the single arm's value estimable for
everyone — with an always-valid interval (the asymptotic confidence sequence of
:func:`loopexp.stats.sequential.cs_halfwidth`, safe to read at every daily look), beside the gain
projected when the rules were chosen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from loopexp.assignment.policy import apply_rules
from loopexp.design.policy import PolicySettings
from loopexp.design.spec import ExperimentSpec
from loopexp.learn.policy.estimators import ipw_scores, mean_interval
from loopexp.learn.policy.evaluate import LoggedData, evaluate_policies
from loopexp.learn.policy.files import logged_data
from loopexp.metrics.sources import Source
from loopexp.stats.sequential import cs_halfwidth

POLICY_ARTIFACT = "policy.json"


class Gain(BaseModel):
    """A gain over the best single arm with its interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    method: str


class PolicyStep(BaseModel):
    """What one send taught about policies: the candidates, the next policy, projected/realised."""

    candidates: dict
    """:meth:`PolicyReport.to_dict` of this send (the ``loopexp policy --json`` shape)."""
    next_policy: PolicySettings
    """The next spec's ``policy:`` section (no rules: keep the single winner, keep learning)."""
    projected: Gain | None = None
    """The deployed rules' gain as projected when they were chosen (None: nothing deployed)."""
    realised: Gain | None = None
    """The deployed rules' gain measured on this send (None: nothing deployed)."""
    notes: list[str] = []
    gain_line: str = ""
    """:meth:`line`, kept for the closed-loop report (which reads the JSON, not this class)."""

    def line(self) -> str:
        """``personalisation gain: projected X [lo, hi], realised Y [lo, hi]`` (or why not)."""
        if self.realised is None or self.projected is None:
            return "personalisation gain: no policy deployed in this iteration"
        p, r = self.projected, self.realised
        return (
            f"personalisation gain: projected {p.value:+.4f} [{p.ci_low:+.4f}, {p.ci_high:+.4f}], "
            f"realised {r.value:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
        )


def realised_gain(spec: ExperimentSpec, data: LoggedData, alpha: float = 0.05) -> Gain:
    """Paired IPW gain of the spec's deployed rules over their default arm, always-valid."""
    assert spec.policy is not None and spec.policy.deployed
    rules = spec.policy.rules
    actions = list(data.actions)
    pi = np.array([actions.index(a) for a in apply_rules(rules, data.frame)], dtype=np.int64)
    single = np.full(len(pi), actions.index(rules[-1].action), dtype=np.int64)
    diff = ipw_scores(data.y, data.action, data.propensity, pi) - ipw_scores(
        data.y, data.action, data.propensity, single
    )
    est = mean_interval(diff, alpha)
    half = cs_halfwidth(est.se, est.n, alpha, tuning_n=est.n)
    return Gain(
        value=est.value,
        ci_low=est.value - half,
        ci_high=est.value + half,
        n=est.n,
        method="paired IPW, always-valid",
    )


def policy_step(
    spec: ExperimentSpec, events: Source, assignment: Source, folds: int = 5
) -> PolicyStep | None:
    """The policy step of a run (None when the spec has no ``policy:`` section)."""
    if spec.policy is None:
        return None
    data, notes = logged_data(spec, events, assignment)
    projected = realised = None
    if spec.policy.deployed:
        realised = realised_gain(spec, data)
        if spec.policy.projected_gain is not None and spec.policy.projected_gain_ci is not None:
            lo, hi = spec.policy.projected_gain_ci
            projected = Gain(
                value=spec.policy.projected_gain,
                ci_low=lo,
                ci_high=hi,
                n=0,
                method="AIPW, cross-fitted",
            )
    report = evaluate_policies(data, folds=folds)
    chosen = report.chosen
    personal = chosen.kind != "single"
    next_policy = PolicySettings(
        name=chosen.name,
        kind=chosen.kind,
        rules=chosen.rules if personal else [],
        exploration=spec.policy.exploration,
        projected_gain=chosen.gain.value if personal else None,
        projected_gain_ci=(chosen.gain.ci_low, chosen.gain.ci_high) if personal else None,
    )
    notes = [*notes, report.reason]
    plan = report.plan_words()
    if plan is not None:
        notes.append(plan)
    if not personal and _incumbent_stays(spec.policy, realised):
        next_policy = spec.policy  # issue 27: the deployed rules, their projection kept
        notes.append(_INCUMBENT_NOTE)
    step = PolicyStep(
        candidates=report.to_dict(),
        next_policy=next_policy,
        projected=projected,
        realised=realised,
        notes=notes,
    )
    return step.model_copy(update={"gain_line": step.line() if realised else ""})


_INCUMBENT_NOTE = (
    "the deployed rules stay: no candidate's gain is clear on this send, but neither is a loss of "
    "the rules (their realised gain interval reaches 0 or above); a send that follows rules "
    "explores each other arm thinly, so it is no evidence against them"
)


def _incumbent_stays(policy: PolicySettings, realised: Gain | None) -> bool:
    """Keep deployed rules when the new send finds no clear candidate and no clear loss.

    Like a control kept until a challenger is shown better: the rules were chosen on a send
    randomised throughout, and a send that follows them estimates the other arms from the
    exploration share only, so a gain interval that now includes 0 is weak evidence. They go only
    when their realised gain is shown negative (interval wholly below 0).
    """
    return policy.deployed and realised is not None and realised.ci_high >= 0


def write_step(step: PolicyStep, folder: Path) -> Path:
    """``policy.json`` in ``folder``."""
    path = folder / POLICY_ARTIFACT
    path.write_text(step.model_dump_json(indent=2), encoding="utf-8")
    return path


def read_step(folder: Path) -> PolicyStep | None:
    """The policy step kept in ``folder`` (None: the run had no policy step)."""
    path = folder / POLICY_ARTIFACT
    if not path.exists():
        return None
    return PolicyStep.model_validate_json(path.read_text(encoding="utf-8"))
