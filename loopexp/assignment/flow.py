"""Assignment at entry into a flow's experiment split: sticky, recency-checked, with propensities.

Recipients reach the split node over time (``entries``: one row per entry, with ``entered_at``,
the time they reached the split). Each gets the arm of a salted hash of their key and the split
node's id, so a re-entry keeps its arm (sticky) and two splits of one flow are independent. The
recency check is an audience rule: an entry within ``flow.recency_days`` of the same recipient's
previous entry is not counted (they are still in the flow). The analysis unit is the recipient at
their first counted entry (intent-to-treat from entry); ``entries`` keeps every counted entry for
the send lists. ``propensity`` is the arm's assignment probability (the column name the policy
assignments use too), ``flow_version`` the flow definition's fingerprint, which keeps versions of
an edited flow apart in the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from loopexp.assignment.assign import groups_from_buckets, unit_interval
from loopexp.core.errors import InputError
from loopexp.design.spec import ExperimentSpec

#: Columns of a flow assignment (beyond ``recipient_key, segment, variant_id``).
FLOW_COLUMNS = ("entered_at", "propensity", "bucket", "flow_id", "split_id", "flow_version")
ENTRY_COLUMNS = ("recipient_key", "entered_at", "segment")


@dataclass
class FlowAssignment:
    """Who entered which arm when: one row per recipient, every counted entry, exclusions."""

    assignment: pd.DataFrame
    """First counted entry per recipient: ``recipient_key, segment, variant_id`` + FLOW_COLUMNS."""
    entries: pd.DataFrame
    """Every counted entry (re-entries after the recency window included), same columns."""
    excluded: dict[str, int] = field(default_factory=dict)
    """Entries not counted, per reason (``recent_reentry``, ``segment_not_in_audience``)."""


def flow_salt(spec: ExperimentSpec) -> str:
    """The salt of the experiment split: the spec's salt and the split node's id."""
    if spec.flow is None:
        raise InputError(f"spec {spec.name!r} has no flow: section; use loopexp assign instead")
    return f"{spec.salt}:{spec.flow.experiment}"


def assign_flow_entries(entries: pd.DataFrame, spec: ExperimentSpec) -> FlowAssignment:
    """Assign flow entries to the arms of ``spec``'s experiment split (see the module docstring).

    ``entries`` has ``recipient_key``, ``entered_at`` (UTC time the recipient reached the split)
    and ``segment`` (a lifecycle group, or a label of ``audience.segment_map``).
    """
    salt = flow_salt(spec)
    flow = spec.flow
    assert flow is not None  # checked by flow_salt
    frame = _checked(entries, spec)
    excluded: dict[str, int] = {}
    wanted = frame["segment"].isin([s.value for s in spec.audience.segments])
    if not wanted.all():
        excluded["segment_not_in_audience"] = int((~wanted).sum())
        frame = frame[wanted]
    frame = frame.sort_values(["recipient_key", "entered_at"], kind="stable", ignore_index=True)
    if flow.recency_days is not None:
        previous = frame.groupby("recipient_key", sort=False)["entered_at"].shift()
        recent = (frame["entered_at"] - previous) < pd.Timedelta(days=flow.recency_days)
        if recent.any():
            excluded["recent_reentry"] = int(recent.sum())
            frame = frame[~recent.to_numpy()].reset_index(drop=True)
    keys = frame["recipient_key"].to_numpy(dtype=object)
    bucket = unit_interval(salt, keys)
    variant = groups_from_buckets(bucket, spec)
    total = sum(v.weight for v in spec.variants)
    share = {v.id: v.weight / total for v in spec.variants}
    frame = frame.assign(
        variant_id=variant,
        propensity=np.array([share[v] for v in variant], dtype=float),
        bucket=bucket,
        flow_id=flow.id,
        split_id=flow.experiment,
        flow_version=flow.version(),
    )
    columns = ["recipient_key", "segment", "variant_id", *FLOW_COLUMNS]
    frame = frame[columns]
    first = frame.drop_duplicates("recipient_key", keep="first").reset_index(drop=True)
    return FlowAssignment(first, frame, excluded)


def _checked(entries: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """The entries with UTC times and lifecycle segments, or an InputError saying what to fix."""
    missing = [c for c in ENTRY_COLUMNS if c not in entries.columns]
    if missing:
        raise InputError(
            f"flow entries lack column(s) {missing}; give one row per entry with "
            f"{list(ENTRY_COLUMNS)} (entered_at: when the recipient reached the split node)"
        )
    keys = entries["recipient_key"].astype("string")
    blank = keys.isna() | (keys.str.strip() == "")
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise InputError(
            f"flow entries: {int(blank.sum())} row(s) without a recipient_key (first: row "
            f"{row + 1}); every entry needs the recipient's key"
        )
    ts = pd.to_datetime(entries["entered_at"], utc=True, errors="coerce")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise InputError(
            f"flow entries: {int(ts.isna().sum())} entered_at value(s) are not times (first: row "
            f"{row + 1}); write ISO times such as 2026-03-02T09:00:00Z"
        )
    labels = entries["segment"].astype(str)
    mapped = labels.map(lambda s: getattr(spec.audience.lifecycle_segment(s), "value", None))
    if mapped.isna().any():
        unknown = sorted(set(labels[mapped.isna()]))[:5]
        raise InputError(
            f"flow entries: segment label(s) {unknown} are not lifecycle groups; map them in "
            "the spec's audience.segment_map (prospect, new_customer, existing_customer, "
            "inactive)"
        )
    return pd.DataFrame(
        {"recipient_key": keys.astype(object), "entered_at": ts, "segment": mapped.astype(object)}
    )


__all__ = ["FLOW_COLUMNS", "FlowAssignment", "assign_flow_entries", "flow_salt"]
