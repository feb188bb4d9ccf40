"""Who is not assigned, and why: the exclusion reasons of a recipient list, first one wins.

Reasons are kept as small integer codes over millions of rows (0 eligible, else 1 + the reason's
index in :data:`REASONS`); :func:`later_duplicates` finds repeated keys from their hashes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loopexp.assignment.recipients import (
    SEGMENT_ORDER,
    PreparedRecipients,
    RecipientsError,
    recently_tested_keys,
)
from loopexp.core.keys import HashKey
from loopexp.design.parts import Audience


class ExclusionReason(StrEnum):
    """Why an input row is not assigned; the first that applies, in this order, is recorded."""

    MISSING_KEY = "missing_key"
    """No id on the row, or no usable e-mail address (empty, or without an ``@``)."""
    SUPPRESSED = "suppressed"
    """Suppressed on this row or on any other row with the same key."""
    NO_CONSENT = "no_consent"
    """No (double opt-in) consent."""
    UNMAPPED_SEGMENT = "unmapped_segment"
    """A segment label the spec does not map (only with ``unmapped_segments: exclude``)."""
    OUTSIDE_AUDIENCE = "outside_audience"
    """A lifecycle segment the audience leaves out, or a value outside ``audience.filters``."""
    RECENTLY_TESTED = "recently_tested"
    """Got a test mail within ``audience.exclude_tested_within_days``."""
    DUPLICATE_KEY = "duplicate_key"
    """A later row of a key already assigned from an earlier row."""


#: The reasons in order; a row's reason code is 0 (eligible) or 1 + its index here.
REASONS = list(ExclusionReason)


def exclusion_reasons(
    prepared: PreparedRecipients,
    audience: Audience,
    key: HashKey | None,
    history: pd.DataFrame | None,
    as_of: datetime | None,
) -> tuple[np.ndarray, str | None]:
    """Each row's first :class:`ExclusionReason` but duplicate keys, and the recency's as-of.

    Reasons are coded 0 (eligible) or 1 + the reason's index in ``REASONS``; the as-of time is
    ISO 8601, None without a recency exclusion.
    """
    n = len(prepared)
    keys = prepared.keys
    reason = np.zeros(n, dtype=np.int8)  # 0 = assigned; else 1 + index in REASONS

    def mark(mask: np.ndarray, why: ExclusionReason) -> None:
        reason[(reason == 0) & mask] = REASONS.index(why) + 1

    def key_in(values: Iterable[str]) -> np.ndarray:
        value_set = pa.array(list(values), type=pa.string())
        return pc.is_in(keys, value_set=value_set).to_numpy(zero_copy_only=False)

    has_key = pc.not_equal(keys, "").to_numpy(zero_copy_only=False)
    mark(~has_key, ExclusionReason.MISSING_KEY)
    suppressed = prepared.suppressed
    if suppressed.any():  # a key suppressed on one row is suppressed on all of its rows
        suppressed = suppressed | key_in(pc.unique(keys.filter(pa.array(suppressed & has_key))))
    mark(suppressed, ExclusionReason.SUPPRESSED)
    mark(~prepared.consent, ExclusionReason.NO_CONSENT)
    mark(prepared.segment_code < 0, ExclusionReason.UNMAPPED_SEGMENT)
    in_audience = np.zeros(len(SEGMENT_ORDER) + 1, dtype=bool)  # last entry: code -1, unmapped
    in_audience[[SEGMENT_ORDER.index(s) for s in audience.segments]] = True
    outside = ~in_audience[prepared.segment_code] | ~prepared.in_filters
    mark(outside, ExclusionReason.OUTSIDE_AUDIENCE)
    as_of_text = None
    if audience.exclude_tested_within_days is not None:
        if history is None:
            raise RecipientsError(
                f"the spec excludes recipients tested in the last "
                f"{audience.exclude_tested_within_days} days, so it needs a contact history "
                "(recipient_key or email, sent_at): pass it as --history FILE (history= in Python)"
            )
        if prepared.key_kind == "id" and "recipient_key" not in history.columns:
            raise RecipientsError(
                "the recipient list is keyed by id, so the contact history needs those ids in a "
                "`recipient_key` column (addresses could not be matched to them)"
            )
        recent = recently_tested_keys(
            history, audience.exclude_tested_within_days, key, as_of, "contact history"
        )
        mark(key_in(recent), ExclusionReason.RECENTLY_TESTED)
        as_of_text = (as_of or datetime.now().astimezone()).isoformat()
    elif history is not None:
        raise RecipientsError(
            "a contact history was given but the spec sets no audience.exclude_tested_within_days;"
            " set it (e.g. 30) or leave the history out"
        )

    return reason, as_of_text


def later_duplicates(keys: pa.Array, top: np.ndarray) -> np.ndarray:
    """True for every row whose key occurred on an earlier row.

    Equal keys have equal hashes, so only rows whose 53-bit hash repeats are compared as text:
    exact, and much faster at 10 M rows than hashing every key into a table of strings.
    """
    out = np.zeros(len(top), dtype=bool)
    ordered = np.sort(top)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size:
        candidates = np.flatnonzero(np.isin(top, repeated))
        texts = pd.Series(keys.take(pa.array(candidates)).to_pylist())
        out[candidates[texts.duplicated().to_numpy()]] = True
    return out
