"""Deterministic assignment: a recipient's group is a pure function of (salt, recipient key).

The same recipient always lands in the same group for the same salt, whatever the order or size of
the list, so send lists can be rebuilt at any time and joined back to events. A new salt (each
iteration gets one) re-randomises, so carry-over from the last iteration does not bias the next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from loopexp.metrics.definitions import HOLDOUT
from loopexp.spec import ExperimentSpec

# Our own code, not a library's: the bucketing must be stable across machines, languages and library
# versions (a SQL engine's hash() is not), so we fix it here as SHA-256 of "salt:key".


def unit_interval(salt: str, keys: Iterable[str]) -> np.ndarray:
    """Map each key to a uniform number in [0, 1): top 53 bits of SHA-256(salt:key) / 2**53.

    53 bits is what a float64 holds exactly, so the value is exact and strictly below 1.
    """
    prefix = f"{salt}:".encode()
    digests = [hashlib.sha256(prefix + str(k).encode()).digest()[:8] for k in keys]
    as_int = np.frombuffer(b"".join(digests), dtype=">u8") >> np.uint64(11)
    return as_int.astype(np.float64) / 2.0**53


def assign_groups(keys: Iterable[str], spec: ExperimentSpec) -> np.ndarray:
    """Group (variant id, or ``holdout``) of each key under ``spec``'s salt and weights."""
    keys = list(keys)
    u = unit_interval(spec.salt, keys)
    ids = [v.id for v in spec.variants]
    weights = np.array([v.weight for v in spec.variants], dtype=float)
    holdout = spec.audience.holdout
    # Holdout takes the bottom of [0, 1); the rest is split by cumulative weight.
    edges = holdout + (1.0 - holdout) * np.cumsum(weights) / weights.sum()
    idx = np.searchsorted(edges, u, side="right")
    labels = np.array(ids, dtype=object)[np.minimum(idx, len(ids) - 1)]
    labels[u < holdout] = HOLDOUT
    return labels


def assign(recipients: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """Assign a recipient table (``recipient_key`` and ``segment`` columns) to groups.

    Recipients outside the spec's audience segments are left out. Returns ``recipient_key``,
    ``segment`` and ``variant_id`` (``holdout`` for the no-mail group), in input order.
    """
    missing = {"recipient_key", "segment"} - set(recipients.columns)
    if missing:
        raise ValueError(
            f"recipient table lacks column(s) {sorted(missing)}; it needs recipient_key and segment"
        )
    allowed = {s.value for s in spec.audience.segments}
    in_audience = recipients[recipients["segment"].isin(allowed)]
    if in_audience["recipient_key"].duplicated().any():
        dupes = in_audience.loc[in_audience["recipient_key"].duplicated(), "recipient_key"]
        raise ValueError(f"recipient_key must be unique; first repeats: {dupes.head(5).tolist()}")
    out = in_audience[["recipient_key", "segment"]].reset_index(drop=True).copy()
    out["variant_id"] = assign_groups(out["recipient_key"], spec)
    return out


def write_send_lists(assignment: pd.DataFrame, folder: str | Path) -> dict[str, Path]:
    """Write one CSV send list per mailed variant (holdout gets none); return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for variant, rows in assignment.groupby("variant_id", sort=True):
        if variant == HOLDOUT:
            continue
        path = folder / f"send_list_{variant}.csv"
        rows[["recipient_key", "segment"]].to_csv(path, index=False)
        paths[str(variant)] = path
    return paths
