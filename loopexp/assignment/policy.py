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

from loopexp.core.errors import InputError
from loopexp.design.policy import PolicyRule, PolicySettings

#: Salt suffix of the exploration draw, so it is independent of the variant bucket.
EXPLORE_SALT = ":policy-explore"


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


def check_features(policy: PolicySettings, columns: Sequence[str], where: str) -> None:
    """Refuse a recipient table that lacks a feature the policy's rules read."""
    missing = [f for f in policy.features() if f not in columns]
    if missing:
        raise InputError(
            f"{where}: the spec's policy reads feature(s) {missing}, absent from the recipients "
            f"(columns: {list(columns)}). Compute them with loopexp.metrics.features from the "
            "event history, or pass a feature table with those columns"
        )


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
