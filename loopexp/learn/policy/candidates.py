"""Candidate policies learned from AIPW scores: best single arm, best arm per segment, a tree.

Each learner takes the training recipients' score matrix Γ (n × actions, :func:`aipw_matrix`: the
doubly robust estimate of each recipient's outcome under each action) and returns ordered
:class:`~loopexp.design.policy.PolicyRule` — the same rules the next spec carries and ``assign``
applies, so what is valued is exactly what would be deployed. The tree is scikit-learn's regression
tree fitted on Γ centred per recipient (the leaves' mean scores; each leaf takes its best action), a
standard plug-in for policy trees kept shallow (depth ≤ 3) and with large leaves, so it stays
readable and does not chase noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeRegressor

from loopexp.design.policy import PolicyCondition, PolicyRule

SEGMENT = "segment"


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate family: ``kind`` single | segment | tree, with the tree's ``depth``."""

    name: str
    kind: str
    depth: int = 0
    complexity: int = 0
    """Order of simplicity for the choice: lower is simpler."""


DEFAULT_CANDIDATES = (
    CandidateSpec("best single arm", "single", 0, 0),
    CandidateSpec("best arm per segment", "segment", 0, 1),
    CandidateSpec("tree depth 2", "tree", 2, 2),
)


def learn(
    spec: CandidateSpec,
    gamma: np.ndarray,
    frame: pd.DataFrame,
    actions: Sequence[str],
    features: Sequence[str],
    min_leaf: int,
) -> list[PolicyRule]:
    """Rules of candidate ``spec`` learned from training scores ``gamma`` and their ``frame``."""
    best = int(np.argmax(gamma.mean(axis=0)))
    if spec.kind == "single":
        return [PolicyRule(action=actions[best])]
    if spec.kind == "segment":
        return _per_segment(gamma, frame[SEGMENT].to_numpy(dtype=object), actions, best)
    return _tree(gamma, frame, actions, features, spec.depth, min_leaf, best)


def _per_segment(
    gamma: np.ndarray, segment: np.ndarray, actions: Sequence[str], best: int
) -> list[PolicyRule]:
    rules = []
    for name in sorted(set(segment.tolist())):
        rows = segment == name
        arm = int(np.argmax(gamma[rows].mean(axis=0)))
        if arm != best:
            when = [PolicyCondition(feature=SEGMENT, op="==", value=str(name))]
            rules.append(PolicyRule(when=when, action=actions[arm]))
    return [*rules, PolicyRule(action=actions[best])]


def design_matrix(
    frame: pd.DataFrame, features: Sequence[str], segments: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Numeric features plus one 0/1 column per segment (named ``segment=<name>``)."""
    columns = [frame[f].to_numpy(dtype=float) for f in features]
    names = list(features)
    if SEGMENT in frame:
        seg = frame[SEGMENT].to_numpy(dtype=object)
        for name in segments:
            columns.append((seg == name).astype(float))
            names.append(f"{SEGMENT}={name}")
    if not columns:
        return np.zeros((len(frame), 1)), ["constant"]
    return np.column_stack(columns), names


def _tree(
    gamma: np.ndarray,
    frame: pd.DataFrame,
    actions: Sequence[str],
    features: Sequence[str],
    depth: int,
    min_leaf: int,
    best: int,
) -> list[PolicyRule]:
    segments = sorted(set(frame[SEGMENT].astype(str))) if SEGMENT in frame else []
    x, names = design_matrix(frame, features, segments)
    integer = [bool(np.all(np.mod(col, 1) == 0)) for col in x.T]
    centred = gamma - gamma.mean(axis=1, keepdims=True)
    tree = DecisionTreeRegressor(max_depth=depth, min_samples_leaf=min_leaf, random_state=0)
    tree.fit(x, centred)
    leaf = tree.apply(x)
    arm = {int(node): int(np.argmax(gamma[leaf == node].mean(axis=0))) for node in set(leaf)}
    rules = []
    for path, a in _paths(tree, names, integer, arm):
        if a != best:
            rules.append(PolicyRule(when=_simplify(path), action=actions[a]))
    return [*rules, PolicyRule(action=actions[best])]


def _paths(
    tree: DecisionTreeRegressor,
    names: Sequence[str],
    integer: Sequence[bool],
    arm: dict[int, int],
) -> list[tuple[list[PolicyCondition], int]]:
    """(conditions, action) of every maximal subtree whose leaves all take one action.

    Left is x < cut, right x ≥ cut; two sibling leaves with the same action are one rule.
    """
    t = tree.tree_

    def actions_under(node: int) -> set[int]:
        if t.children_left[node] == -1:
            return {arm[node]}
        return actions_under(t.children_left[node]) | actions_under(t.children_right[node])

    out: list[tuple[list[PolicyCondition], int]] = []
    stack: list[tuple[int, list[PolicyCondition]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        under = actions_under(node)
        if len(under) == 1:
            out.append((path, under.pop()))
            continue
        column = int(t.feature[node])
        threshold = float(t.threshold[node])
        # On a whole-number feature, x ≤ 17.5 is x < 18: the rule reads in whole numbers.
        cut = float(np.ceil(threshold)) if integer[column] else round(threshold, 6)
        left, right = _split(names[column], cut)
        stack.append((int(t.children_right[node]), [*path, right]))
        stack.append((int(t.children_left[node]), [*path, left]))
    return out


def _split(name: str, cut: float) -> tuple[PolicyCondition, PolicyCondition]:
    """The two conditions of a split (scikit-learn sends x ≤ t left; thresholds are midpoints)."""
    if name.startswith(f"{SEGMENT}="):
        value = name.split("=", 1)[1]
        return (
            PolicyCondition(feature=SEGMENT, op="!=", value=value),
            PolicyCondition(feature=SEGMENT, op="==", value=value),
        )
    return (
        PolicyCondition(feature=name, op="<", value=cut),
        PolicyCondition(feature=name, op=">=", value=cut),
    )


def _simplify(path: list[PolicyCondition]) -> list[PolicyCondition]:
    """Keep the tightest bound per feature and direction (``x < 200 and x < 40`` is ``x < 40``)."""
    out: list[PolicyCondition] = []
    for c in path:
        same = next((i for i, o in enumerate(out) if (o.feature, o.op) == (c.feature, c.op)), None)
        if same is None or c.op in ("==", "!="):
            if c.op == "!=" or c not in out:
                out.append(c)
            continue
        kept = out[same]
        tighter = (
            float(c.value) < float(kept.value)
            if c.op == "<"
            else float(c.value) > float(kept.value)
        )
        if tighter:
            out[same] = c
    return out
