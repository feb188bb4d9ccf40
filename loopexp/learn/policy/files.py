"""``loopexp policy`` as a function: a spec, its events and assignment → a :class:`PolicyReport`.

Reads each assigned recipient's outcome (the spec's primary metric) in the engine, the propensity
of their variant (the assignment's ``propensity`` column; without it, the spec's variant weights,
which is what the salted-hash split drew with), and the pre-treatment features (a feature table, or
computed from an event history before the send), then learns and values the candidates.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from loopexp.design.spec import ExperimentSpec
from loopexp.learn.policy.estimators import PolicyError
from loopexp.learn.policy.evaluate import LoggedData, PolicyReport, evaluate_policies
from loopexp.learn.policy.guardrails import GuardrailOutcome
from loopexp.metrics.definitions import HOLDOUT
from loopexp.metrics.features import (
    FEATURE_COLUMNS,
    history_features,
    no_history,
    read_feature_table,
    recipient_outcomes,
)
from loopexp.metrics.sources import Source


def logged_data(
    spec: ExperimentSpec,
    events: Source,
    assignment: Source,
    features: str | Path | pd.DataFrame | None = None,
    history: Source | None = None,
    as_of: datetime | None = None,
) -> tuple[LoggedData, list[str]]:
    """The send as :class:`LoggedData`, and notes in plain words on how it was read."""
    # Only the columns a policy uses leave DuckDB, the holdout's rows not at all (10 M recipients).
    needed = ("recipient_key", "variant_id", "segment", "propensity", *FEATURE_COLUMNS)
    guards = [g for g in spec.guardrails if spec.metric(g.metric).kind != "ratio"]
    outcomes = recipient_outcomes(
        events,
        assignment,
        spec.primary_metric,
        columns=needed,
        drop_variant=HOLDOUT,
        extra=[spec.metric(g.metric) for g in guards],
    )
    table = outcomes.table
    notes = [
        f"{outcomes.assigned:,} assigned recipients; {outcomes.events:,} events, "
        f"{outcomes.quarantined:,} quarantined"
    ]
    table = table.reset_index(drop=True)
    table["recipient_key"] = table["recipient_key"].astype(str)
    actions = tuple(v.id for v in spec.variants)
    variant = table["variant_id"].astype(str).to_numpy()
    unknown = sorted(set(variant) - set(actions))
    if unknown:
        raise PolicyError(f"the assignment has variant(s) {unknown} not in the spec {actions}")
    action = np.array([actions.index(v) for v in variant], dtype=np.int64)
    propensity, note = _propensity(spec, table, action)
    notes.append(note)
    frame, names = _features(table, features, history, as_of, notes)
    guardrails = tuple(
        GuardrailOutcome(
            g.metric,
            table[f"y:{g.metric}"].to_numpy(dtype=float),
            worse_is_up=not spec.metric(g.metric).higher_is_better,
            max_relative_increase=g.max_relative_increase,
            mode=g.mode,
        )
        for g in guards
    )
    skipped = [g.metric for g in spec.guardrails if g not in guards]
    if skipped:
        notes.append(
            f"guardrail(s) {skipped} are ratios, with no per-recipient value: the policy choice "
            "cannot check them (the analysis of the arms still does)"
        )
    data = LoggedData(
        frame,
        tuple(names),
        actions,
        action,
        propensity,
        table["y"].to_numpy(dtype=float),
        guardrails,
    )
    return data, notes


def _propensity(
    spec: ExperimentSpec, table: pd.DataFrame, action: np.ndarray
) -> tuple[np.ndarray, str]:
    if "propensity" in table and table["propensity"].notna().all():
        # The column is P(group) with the holdout in it; among the mailed: divide by 1 − holdout.
        mailed = 1 - spec.audience.holdout
        return table["propensity"].to_numpy(
            dtype=float
        ) / mailed, "propensities from the assignment"
    weights = np.array([v.weight for v in spec.variants], dtype=float)
    shares = weights / weights.sum()
    return shares[action], (
        "propensities from the spec's variant weights (the assignment has no `propensity` "
        "column): right for a plain salted-hash split, wrong for one made by a policy or bandit"
    )


def _features(
    table: pd.DataFrame,
    features: str | Path | pd.DataFrame | None,
    history: Source | None,
    as_of: datetime | None,
    notes: list[str],
) -> tuple[pd.DataFrame, list[str]]:
    base = table[["recipient_key", "segment"]].copy()
    base["segment"] = base["segment"].astype(str)
    if features is not None:
        given = features if isinstance(features, pd.DataFrame) else read_feature_table(features)
        given = given.drop(columns=["segment"], errors="ignore")
        merged = base.merge(given, on="recipient_key", how="left", validate="one_to_one")
        names = [c for c in given.columns if c != "recipient_key"]
        missing = int(merged[names].isna().any(axis=1).sum()) if names else 0
        if missing:
            raise PolicyError(
                f"the feature table lacks {missing:,} of the {len(base):,} mailed recipients "
                "(or has blanks for them); give every recipient a row with every feature"
            )
        notes.append(f"features from the table: {', '.join(names)}")
        return merged, names
    if history is not None:
        if as_of is None:
            raise PolicyError("features from an event history need the send date (as_of)")
        computed = history_features(history, as_of)
        merged = base.merge(computed, on="recipient_key", how="left")
        merged = merged.fillna(no_history())
        notes.append(f"features from the event history before {as_of:%Y-%m-%d}")
        return merged, list(FEATURE_COLUMNS)
    known = [c for c in FEATURE_COLUMNS if c in table]  # features kept in the assignment
    if known and table[known].notna().all().all():
        notes.append(f"features from the assignment: {', '.join(known)}")
        return pd.concat([base, table[known].astype(float)], axis=1), known
    notes.append("no features: candidates use the lifecycle segment only")
    return base, []


def learn_policy(
    spec: ExperimentSpec,
    events: Source,
    assignment: Source,
    features: str | Path | pd.DataFrame | None = None,
    history: Source | None = None,
    as_of: datetime | None = None,
    folds: int = 5,
    seed: int = 0,
) -> tuple[PolicyReport, list[str]]:
    """Learn and value the candidate policies of one send; the report and how the data was read."""
    data, notes = logged_data(spec, events, assignment, features, history, as_of)
    return evaluate_policies(data, folds=folds, seed=seed), notes
