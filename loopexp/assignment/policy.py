"""Applying a spec's ``policy:`` section: each recipient's variant from the rules, or explored.

A share ``policy.exploration`` of recipients (chosen by a salted hash of their key, independent of
the variant draw) is randomised uniformly over the variants; the rest get the variant the rules give
them. Every recipient's ``propensity`` — the probability with which *their* variant was drawn — is
what an off-policy estimate of the next policy needs, and what measures the realised gain of this
one: for a recipient the rules send to ``b``, P(b) = (1 − e) + e / K and P(other) = e / K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from loopexp.assignment.recipients import SEGMENT_ORDER
from loopexp.core.errors import InputError
from loopexp.design.policy import PolicyRule, PolicySettings
from loopexp.design.spec import ExperimentSpec

#: Salt suffix of the exploration draw, so it is independent of the variant bucket.
EXPLORE_SALT = ":policy-explore"


def deployed(spec: ExperimentSpec) -> bool:
    """True when ``spec`` has a policy with rules to apply."""
    return spec.policy is not None and spec.policy.deployed


def apply_rules(rules: Sequence[PolicyRule], features: pd.DataFrame) -> np.ndarray:
    """The action of each row of ``features`` under ``rules``: the first rule that holds."""
    out = np.empty(len(features), dtype=object)
    open_rows = np.ones(len(features), dtype=bool)
    for rule in rules:
        mask = open_rows.copy()
        for c in rule.when:
            column = features[c.feature].to_numpy()
            if c.op == "==":
                mask &= column == c.value
            elif c.op == "!=":
                mask &= column != c.value
            elif c.op == "<":
                mask &= column.astype(float) < float(c.value)
            else:
                mask &= column.astype(float) >= float(c.value)
        out[mask] = rule.action
        open_rows &= ~mask
    out[open_rows] = rules[-1].action
    return out


def policy_features(
    policy: PolicySettings, rows: pd.DataFrame, raw: pd.DataFrame, where: str
) -> pd.DataFrame:
    """The features the rules read: ``raw``'s columns, and ``segment`` as mapped in ``rows``."""
    columns = [*raw.columns, "segment"]
    missing = [f for f in policy.features() if f not in columns]
    if missing:
        raise InputError(
            f"{where}: the spec's policy reads feature(s) {missing}, absent from the recipients "
            f"(columns: {list(raw.columns)}). Add them to the list (loopexp.metrics.features "
            "computes them from the event history)"
        )
    features = raw[[f for f in policy.features() if f != "segment"]].reset_index(drop=True)
    features["segment"] = np.asarray(rows["segment"], dtype=object)
    return features


def policy_rows(spec: ExperimentSpec, keys: pa.Array, segment_code: np.ndarray) -> pd.DataFrame:
    """Keys and lifecycle segments of the assigned rows when the spec has a policy, else empty.

    Empty without a policy: a 10 M-row list then pays nothing for it.
    """
    if not deployed(spec):
        return pd.DataFrame()
    segments = np.array([s.value for s in SEGMENT_ORDER], dtype=object)[segment_code]
    return pd.DataFrame({"recipient_key": keys.to_pandas(), "segment": segments})


def policy_groups(
    policy: PolicySettings,
    features: pd.DataFrame,
    variants: Sequence[str],
    explore_u: np.ndarray,
    variant_u: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Variant, propensity and explored flag per recipient under ``policy``.

    ``explore_u`` and ``variant_u`` are independent uniform draws per recipient (salted hashes):
    ``explore_u < exploration`` explores, and then ``variant_u`` picks a variant uniformly.
    """
    k = len(variants)
    unknown = sorted({r.action for r in policy.rules} - set(variants))
    if unknown:
        raise InputError(
            f"policy rules name variant(s) {unknown} that are not in the spec {list(variants)}"
        )
    chosen = apply_rules(policy.rules, features)
    explored = explore_u < policy.exploration
    uniform = np.asarray(variants, dtype=object)[np.minimum((variant_u * k).astype(int), k - 1)]
    variant = np.where(explored, uniform, chosen)
    e = policy.exploration
    propensity = np.where(variant == chosen, (1 - e) + e / k, e / k)
    return variant, propensity, explored


def split_propensities(spec: ExperimentSpec) -> np.ndarray:
    """Probability of each group ``[*variants, holdout]`` under the spec's weights and holdout."""
    weights = np.array([v.weight for v in spec.variants], dtype=float)
    holdout = spec.audience.holdout
    return np.append((1 - holdout) * weights / weights.sum(), holdout)


def policy_codes(
    spec: ExperimentSpec,
    bucket: np.ndarray,
    group_code: np.ndarray,
    explore_u: np.ndarray | None,
    features: pd.DataFrame | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Group code and ``propensity`` of each recipient: the weights' split, or the spec's policy.

    Without a policy the split stands and the propensity is the group's share. With one, the
    holdout stays as hashed; every mailed recipient gets the policy's variant, except an
    exploration share (``explore_u``, a second salted hash) randomised uniformly by the same
    bucket; the propensity is then P(holdout) = h, P(variant) = (1 − h) · P(variant | mailed).
    """
    shares = split_propensities(spec)
    if not deployed(spec):
        return group_code, shares[group_code]
    if explore_u is None or features is None:
        raise InputError("a spec with a policy needs the exploration hash and the features")
    variants = [v.id for v in spec.variants]
    k, holdout = len(variants), spec.audience.holdout
    mailed = group_code < k
    variant_u = (bucket[mailed] - holdout) / (1 - holdout)
    chosen, p, _ = policy_groups(
        spec.policy, features[mailed], variants, explore_u[mailed], variant_u
    )
    codes = group_code.copy()
    index = {v: i for i, v in enumerate(variants)}
    codes[mailed] = np.array([index[v] for v in chosen], dtype=codes.dtype)
    propensity = np.full(len(codes), holdout, dtype=float)
    propensity[mailed] = (1 - holdout) * p
    return codes, propensity
