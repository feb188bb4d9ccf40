"""Learn candidate policies, value them on held-out recipients (sequential cross-fitting), choose.

Recipients are split into ``folds`` ordered chunks by a seeded permutation. Chunk k (k ≥ 2) is
scored by AIPW (and IPW, DM) under the policy of each candidate learned on chunks 1..k−1 only,
with an outcome model μ̂(x, a) (one scikit-learn regression tree per action) also fitted on chunks
1..k−1; chunk 1 only teaches. The estimand of a candidate is the mean over chunks 2..K of the true
value of the chunk's policy (weighted by chunk size): the value of "learn this kind of policy on
data like this, deploy it" — at most that of the rules re-learned on everyone, which are deployed.

Why sequential rather than the usual K-fold cross-fitting: with K-fold, fold k's policy is learned
on the other folds' outcomes, so the held-out errors of different folds are positively correlated
(each policy leans towards the other folds' noise) and the CLT interval on the stacked scores is
too narrow when nothing differs — bench/policy_calibration.md measured 90.6 % coverage and 4.2 %
false personalisation at α = 0.05 that way. In the sequential scheme each chunk's error has mean 0
given the earlier chunks (a martingale difference), so the errors are uncorrelated and the stacked
CLT interval is valid: the "online one-step" estimator of Luedtke & van der Laan (2016, Ann. Stat.
44(2), "Statistical inference for the mean outcome under a possibly non-unique optimal treatment
rule") with chunks instead of single recipients. The price: 1/K of the recipients only teach and
the policies are learned on half the data on average; :func:`~.estimators.planned_policy_recipients`
sizes for it.

The choice: the simplest candidate whose paired gain interval over the best single arm lies above
0; otherwise the best single arm, saying so. "Over the best single arm" is shown as over every
single arm fixed in advance (each chunk's *learned* single arm may be the wrong one, which a policy
then truly beats: the gain is judged against the least favourable fixed arm, an intersection-union
test). The gain intervals are simultaneous over the personalised candidates (Bonferroni: level
1 − α/m for m of them), which bounds the share of sends where a policy is chosen although nothing
differs by α/2. A candidate whose guardrail is worse than
the best single arm's beyond the spec's tolerance is never chosen (:mod:`.guardrails`).
The rules reported (and deployed) are the candidate re-learned on all recipients, with scores from
a K-fold cross-fitted μ̂.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeRegressor

from loopexp.assignment.policy import apply_rules
from loopexp.design.policy import PolicyRule
from loopexp.learn.policy.candidates import (
    DEFAULT_CANDIDATES,
    SEGMENT,
    CandidateSpec,
    design_matrix,
    learn,
)
from loopexp.learn.policy.estimators import (
    Estimate,
    PolicyCell,
    PolicyError,
    aipw_matrix,
    aipw_scores,
    check_logged,
    dm_scores,
    ipw_scores,
    mean_interval,
    planned_policy_recipients,
)
from loopexp.learn.policy.guardrails import GuardrailOutcome, GuardrailValue, guardrail_value


@dataclass(frozen=True)
class LoggedData:
    """One randomised send, one row per mailed recipient.

    ``frame`` holds ``segment`` and the pre-treatment ``features``; ``action`` the index into
    ``actions`` of the variant each got; ``propensity`` the probability it was drawn with; ``y`` the
    outcome (e.g. 1 for a human click).
    """

    frame: pd.DataFrame
    features: tuple[str, ...]
    actions: tuple[str, ...]
    action: np.ndarray
    propensity: np.ndarray
    y: np.ndarray
    guardrails: tuple[GuardrailOutcome, ...] = ()
    """The spec's guardrail metrics per recipient: a candidate that worsens one is not chosen."""

    def __post_init__(self) -> None:
        check_logged(self.action, self.propensity, self.y)
        for g in self.guardrails:
            if len(g.y) != len(self.y) or not np.isfinite(g.y).all():
                raise PolicyError(
                    f"guardrail {g.metric}: {len(g.y)} values for {len(self.y)} recipients (or "
                    "not all finite); give every mailed recipient one"
                )
        if len(self.frame) != len(self.y):
            raise PolicyError(f"{len(self.frame)} feature rows for {len(self.y)} outcomes")
        missing = [f for f in self.features if f not in self.frame]
        if missing:
            raise PolicyError(f"feature column(s) {missing} missing; have {list(self.frame)}")
        counts = np.bincount(self.action, minlength=len(self.actions))
        if len(self.actions) < 2 or (counts < 2).any():
            raise PolicyError(
                "a policy needs at least two variants each sent to at least 2 recipients; "
                f"sent per variant: {dict(zip(self.actions, counts.tolist(), strict=True))}"
            )


@dataclass(frozen=True)
class CandidateValue:
    """One candidate's held-out value (AIPW, IPW, DM) and gain over the best single arm."""

    name: str
    kind: str
    complexity: int
    rules: list[PolicyRule]
    aipw: Estimate
    ipw: Estimate
    dm: float
    gain: Estimate
    guardrails: list[GuardrailValue] = field(default_factory=list)

    def vetoed(self) -> list[GuardrailValue]:
        """The guardrails this candidate worsens beyond the spec's tolerance."""
        return [g for g in self.guardrails if g.vetoed]

    def to_dict(self) -> dict[str, object]:
        """The issue's JSON shape (plus the IPW and DM values beside the AIPW one)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "value": self.aipw.value,
            "ci_low": self.aipw.ci_low,
            "ci_high": self.aipw.ci_high,
            "gain": self.gain.value,
            "gain_ci_low": self.gain.ci_low,
            "gain_ci_high": self.gain.ci_high,
            "ipw": self.ipw.value,
            "dm": self.dm,
            "rules": [r.words() for r in self.rules],
            "guardrails": [g.to_dict() for g in self.guardrails],
        }


@dataclass(frozen=True)
class PolicyReport:
    """Candidates side by side and the one chosen, with the reason in plain words."""

    chosen: CandidateValue
    candidates: list[CandidateValue]
    reason: str
    folds: int
    recipients: int
    alpha: float
    """Level of the value intervals (1 − alpha)."""
    gain_alpha: float
    """Level of the gain intervals: alpha over the number of personalised candidates."""
    method: str = "aipw"
    actions: tuple[str, ...] = field(default=())
    fit: CrossFit | None = field(default=None, repr=False)
    """The held-out scores behind the values (calibration, the notebook's plots)."""
    planned_recipients: int | None = None
    """Mailed recipients a randomised send needs for this procedure to find, with 80 % power,
    per-segment gains like this send's (None: no segment gains here)."""

    def plan_words(self) -> str | None:
        """:attr:`planned_recipients` in a sentence (None without a plan)."""
        if self.planned_recipients is None:
            return None
        return (
            f"a randomised send of {self.planned_recipients:,} mailed recipients finds "
            "per-segment gains like this send's with 80 % power (cost of learning included)"
        )

    def to_dict(self) -> dict[str, object]:
        """``{"chosen": {name, kind, rules}, "candidates": [...], "method", "folds"}`` and more."""
        return {
            "chosen": {
                "name": self.chosen.name,
                "kind": self.chosen.kind,
                "rules": [r.words() for r in self.chosen.rules],
                "reason": self.reason,
            },
            "candidates": [c.to_dict() for c in self.candidates],
            "method": self.method,
            "folds": self.folds,
            "recipients": self.recipients,
            "alpha": self.alpha,
            "gain_alpha": self.gain_alpha,
            "planned_recipients": self.planned_recipients,
        }


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each recipient: a seeded permutation cut in ``folds`` near-equal parts."""
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return out


def outcome_model(
    data: LoggedData, train: np.ndarray, segments: Sequence[str], y: np.ndarray | None = None
) -> np.ndarray:
    """μ̂(x, a) for every recipient (n × actions): one regression tree per action, fit on ``train``.

    A shallow tree per action captures segment and feature effects without tuning; any model
    works for AIPW's unbiasedness (the propensities are known), a better one only narrows it. An
    action no training recipient got is modelled by the training mean (still unbiased).
    """
    y = data.y if y is None else y
    x, _ = design_matrix(data.frame, data.features, segments)
    mu = np.empty((len(y), len(data.actions)))
    for a in range(len(data.actions)):
        rows = train & (data.action == a)
        if rows.sum() < 2:
            mu[:, a] = float(y[train].mean()) if train.any() else 0.0
            continue
        leaf = max(20, int(rows.sum()) // 50)
        model = DecisionTreeRegressor(max_depth=4, min_samples_leaf=leaf, random_state=0)
        model.fit(x[rows], y[rows])
        mu[:, a] = model.predict(x)
    return mu


def _codes(actions_of: np.ndarray, actions: Sequence[str]) -> np.ndarray:
    return pd.Categorical(actions_of, categories=list(actions)).codes.astype(np.int64)


@dataclass(frozen=True)
class CrossFit:
    """Held-out scores per candidate and estimator, the out-of-fold μ̂, and each chunk's rules."""

    scores: dict[str, dict[str, np.ndarray]]
    """candidate name → ``aipw`` / ``ipw`` / ``dm`` → one score per recipient (NaN in chunk 1)."""
    mu: np.ndarray
    """K-fold cross-fitted μ̂ of every recipient (for the rules re-learned on everyone)."""
    fold: np.ndarray
    """Chunk of each recipient, 0..K−1; chunk 0 only teaches."""
    rules: dict[str, list[list[PolicyRule]]]
    """candidate name → the rules learned on chunks < k, for k = 1..K−1 (what chunk k valued)."""
    arms: np.ndarray
    """n × actions: held-out AIPW score of "everyone → this arm" (NaN in chunk 1)."""

    @property
    def evaluated(self) -> np.ndarray:
        """Recipients with held-out scores (every chunk but the first)."""
        return self.fold > 0

    @property
    def weights(self) -> np.ndarray:
        """Share of the scored recipients in each scored chunk: the estimand's weights."""
        counts = np.bincount(self.fold)[1:]
        return counts / counts.sum()


def cross_fit(
    data: LoggedData,
    candidates: Sequence[CandidateSpec] = DEFAULT_CANDIDATES,
    folds: int = 5,
    seed: int = 0,
) -> CrossFit:
    """Sequentially cross-fitted scores per candidate (``aipw``, ``ipw``, ``dm``), μ̂, rules."""
    n = len(data.y)
    if n < 10 * folds:
        raise PolicyError(f"{n} recipients for {folds} folds: need at least {10 * folds}")
    if folds < 2:
        raise PolicyError(f"{folds} fold(s): sequential cross-fitting needs at least 2")
    segments = sorted(set(data.frame[SEGMENT].astype(str))) if SEGMENT in data.frame else []
    fold = fold_ids(n, folds, seed)
    mu_all = np.empty((n, len(data.actions)))
    kinds = ("aipw", "ipw", "dm", *(guardrail_key(g) for g in data.guardrails))
    scores = {c.name: {k: np.full(n, np.nan) for k in kinds} for c in candidates}
    fold_rules: dict[str, list[list[PolicyRule]]] = {c.name: [] for c in candidates}
    arms = np.full((n, len(data.actions)), np.nan)
    for k in range(folds):
        test = fold == k
        mu_all[test] = outcome_model(data, fold != k, segments)[test]
        if k == 0:
            continue
        train = fold < k  # only earlier chunks: the errors of chunk k have mean 0 given them
        mu = outcome_model(data, train, segments)
        gamma = aipw_matrix(data.y[train], data.action[train], data.propensity[train], mu[train])
        min_leaf = max(50, int(train.sum()) // 20)
        y, a, p, mu_test = data.y[test], data.action[test], data.propensity[test], mu[test]
        arms[test] = aipw_matrix(y, a, p, mu_test)
        guard_mu = [outcome_model(data, train, segments, g.y)[test] for g in data.guardrails]
        for c in candidates:
            rules = learn(c, gamma, data.frame[train], data.actions, data.features, min_leaf)
            fold_rules[c.name].append(rules)
            pi = _codes(apply_rules(rules, data.frame[test]), data.actions)
            scores[c.name]["aipw"][test] = aipw_scores(y, a, p, mu_test, pi)
            scores[c.name]["ipw"][test] = ipw_scores(y, a, p, pi)
            scores[c.name]["dm"][test] = dm_scores(mu_test, pi)
            for g, g_mu in zip(data.guardrails, guard_mu, strict=True):
                scores[c.name][guardrail_key(g)][test] = aipw_scores(g.y[test], a, p, g_mu, pi)
    return CrossFit(scores, mu_all, fold, fold_rules, arms)


def guardrail_key(g: GuardrailOutcome) -> str:
    """Key of a guardrail's AIPW scores in :attr:`CrossFit.scores`."""
    return f"guardrail:{g.metric}"


def evaluate_policies(
    data: LoggedData,
    candidates: Sequence[CandidateSpec] = DEFAULT_CANDIDATES,
    folds: int = 5,
    alpha: float = 0.05,
    seed: int = 0,
) -> PolicyReport:
    """Value every candidate on held-out recipients, compare each with the best single arm, choose.

    The first of ``candidates`` must be the single-arm one (the comparison for every gain).
    """
    if candidates[0].kind != "single":
        raise PolicyError("the first candidate must be the best single arm (kind 'single')")
    fit = cross_fit(data, candidates, folds, seed)
    held = fit.evaluated
    scores = {c: {k: v[held] for k, v in by.items()} for c, by in fit.scores.items()}
    base = scores[candidates[0].name]["aipw"]
    gamma = aipw_matrix(data.y, data.action, data.propensity, fit.mu)
    min_leaf = max(50, len(data.y) // 20)
    gain_alpha = alpha / max(1, len(candidates) - 1)
    values = []
    for c in candidates:
        s = scores[c.name]
        rules = learn(c, gamma, data.frame, data.actions, data.features, min_leaf)
        gain = _gain(s["aipw"] - base, gain_alpha)
        if c is not candidates[0] and gain.se > 0:  # identical to the single arm: 0, no evidence
            gain = _gain_over_every_arm(s["aipw"], fit.arms[held], gain_alpha)
        single = scores[candidates[0].name]
        guards = [
            guardrail_value(g, s[guardrail_key(g)], single[guardrail_key(g)], alpha)
            for g in data.guardrails
        ]
        values.append(
            CandidateValue(
                c.name,
                c.kind,
                c.complexity,
                rules,
                mean_interval(s["aipw"], alpha),
                mean_interval(s["ipw"], alpha),
                float(s["dm"].mean()),
                gain,
                guards,
            )
        )
    chosen, reason = choose(values)
    cells = segment_cells(gamma, data, values[0].rules[-1].action)
    return PolicyReport(
        chosen,
        values,
        reason,
        folds,
        len(data.y),
        alpha,
        gain_alpha,
        actions=data.actions,
        fit=fit,
        planned_recipients=_plan(cells, folds, alpha, len(candidates) - 1),
    )


def segment_cells(gamma: np.ndarray, data: LoggedData, single: str) -> list[PolicyCell]:
    """Per segment: its share, and the AIPW gain (and sd) of its best other arm over ``single``.

    What :func:`~.estimators.planned_policy_recipients` needs from a pilot. With more than two
    arms, the best other arm per segment is picked on the same data (an optimistic gain).
    """
    if SEGMENT not in data.frame:
        return []
    base = data.actions.index(single)
    segment = data.frame[SEGMENT].astype(str).to_numpy()
    cells = []
    for name in sorted(set(segment.tolist())):
        rows = segment == name
        diffs = [gamma[rows, a] - gamma[rows, base] for a in range(len(data.actions)) if a != base]
        best = max(diffs, key=lambda d: float(d.mean()))
        if rows.sum() >= 2:
            cells.append(
                PolicyCell(float(rows.mean()), float(best.mean()), float(best.std(ddof=1)))
            )
    return cells


def _plan(cells: list[PolicyCell], folds: int, alpha: float, candidates: int) -> int | None:
    if not any(c.gain > 0 for c in cells) or any(c.sd <= 0 for c in cells):
        return None
    try:
        return planned_policy_recipients(cells, folds, alpha, candidates=max(1, candidates))
    except PolicyError:  # a gain too small to find with any list: no plan, never a huge number
        return None


def _gain_over_every_arm(scores: np.ndarray, arms: np.ndarray, alpha: float) -> Estimate:
    """The candidate's paired gain over each single arm fixed in advance; the least favourable.

    A policy is shown better than the best single arm when it is shown better than every single
    arm (an intersection-union test: each comparison at the gain level, no further adjustment).
    Comparing with the *learned* single arm instead would count as a gain the beating of a wrong
    single arm that chunk learned (b wins by little, a learned on 20 % of the data): false
    personalisation beyond α/2 in bench/policy_calibration.md.
    """
    gains = [_gain(scores - arms[:, a], alpha) for a in range(arms.shape[1])]
    return min(gains, key=lambda g: (g.ci_low, g.value))


def _gain(diff: np.ndarray, alpha: float) -> Estimate:
    """Paired gain; identical policies give a zero-width interval at 0 (never evidence)."""
    if not np.any(diff):
        return Estimate(0.0, 0.0, 0.0, 0.0, diff.size)
    return mean_interval(diff, alpha)


def choose(values: Sequence[CandidateValue]) -> tuple[CandidateValue, str]:
    """The simplest candidate with a gain interval above 0 that keeps the guardrails; with why.

    Otherwise the best single arm, saying whether no gain was clear or a guardrail vetoed it.
    """
    single = values[0]
    vetoed: list[str] = []
    for c in sorted(values[1:], key=lambda v: v.complexity):
        if not (c.gain.se > 0 and c.gain.ci_low > 0 and len(c.rules) > 1):
            continue
        if c.vetoed():
            worse = "; ".join(g.words() for g in c.vetoed())
            vetoed.append(f"{c.name} gains but worsens a guardrail beyond its tolerance ({worse})")
            continue
        return c, "; ".join(
            [
                f"{c.name}: gain over the best single arm {c.gain.value:+.4f} "
                f"[{c.gain.ci_low:+.4f}, {c.gain.ci_high:+.4f}] on held-out recipients, the "
                "simplest candidate whose gain interval lies above 0 and that keeps the guardrails",
                *(f"not chosen: {v}" for v in vetoed),
            ]
        )
    if vetoed:
        return single, (
            f"{'; '.join(vetoed)}: not chosen. Send the single winner, {single.rules[-1].words()}"
        )
    return single, (
        "no candidate's gain over the best single arm is clear (every gain interval includes 0 "
        f"or lies below it): send the single winner, {single.rules[-1].words()}"
    )
