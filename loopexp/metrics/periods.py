"""Recipients per day of enrolment, or per send batch, and group: the sample ratio over time.

A lifecycle flow's assignment dates each recipient's entry (``enrolled_at``); a split broken on
one day can hide in a long flow's totals. Counted from the assignment alone (no scan of the
events), by the same SQL in both engines.

A one-off send goes out in batches; one that failed for one variant in batch 3 can hide in the
totals when another batch failed the other way. The events carry no ESP batch id (the canonical
schema has none), so a batch is the UTC hour of each recipient's first send (or delivery)
event. Counted in the same pass as the statistics (:func:`loopexp.metrics.compile.
events_stats_sql`: its segment rows are grouped by batch too, and added up again here), not by a
second scan of the events, which cost ~25 %.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

#: The assignment column that dates a recipient's enrolment (continuous flows).
ENROLLED_AT = "enrolled_at"


def periods_sql(assignment: str) -> str:
    """Per (day of enrolment, variant): assigned recipients (NULL day: no enrolment time)."""
    return (
        f"SELECT CAST(CAST({ENROLLED_AT} AS DATE) AS STRING) AS period, "
        f"CAST(variant_id AS STRING) AS variant_id, count(*) AS n FROM {assignment} GROUP BY 1, 2"
    )


def by_period(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    """Period → variant → recipients from the rows of :func:`periods_sql` (NULLs left out)."""
    out: dict[str, dict[str, int]] = {}
    for period, variant, n in rows:
        if period is not None and variant is not None:
            out.setdefault(str(period), {})[str(variant)] = int(n)
    return dict(sorted(out.items()))


#: The outcomes column holding a recipient's send batch (whole hours since the epoch, UTC).
SEND_BATCH = "send_batch"


def send_batch_column(first_sent_epoch: str) -> str:
    """The ``send_batch`` column from a first-send time's epoch-seconds expression."""
    return f"CAST(floor({first_sent_epoch} / 3600) AS BIGINT) AS {SEND_BATCH}"


def batch_label(hours: int) -> str:
    """A send batch's name: its UTC hour, ``2026-03-02 09:00 UTC``."""
    return datetime.fromtimestamp(int(hours) * 3600, tz=UTC).strftime("%Y-%m-%d %H:00 UTC")


def _merge(into: dict[str, Any], row: dict[str, Any]) -> None:
    """Add one segment x batch row's sums to its segment row (``last_sent``: the latest)."""
    for k, v in row.items():
        if k in ("variant_id", "segment", "all_segments", SEND_BATCH) or v is None:
            continue
        old = into.get(k)
        if old is None:
            into[k] = v
        else:
            into[k] = max(old, v) if k == "last_sent" else old + v


def split_batches(
    rows: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """The statistics rows per variant and segment, and batch → group → recipients.

    The statistics query groups segments by send batch as well (every statistic is a sum, so
    the segment's row is the sum of its batch rows; the batch's count the sum over segments).
    Only recipients on the assignment with a send time are in a batch (a recipient without any
    send event has none; events of recipients not on it have no group).
    """
    rest: list[dict[str, Any]] = []
    merged: dict[tuple[Any, Any], dict[str, Any]] = {}
    batches: dict[str, dict[str, int]] = {}
    for r in rows:
        if int(r["all_segments"]):
            rest.append({k: v for k, v in r.items() if k != SEND_BATCH})
            continue
        key = (r["variant_id"], r["segment"])
        if key not in merged:
            merged[key] = {"variant_id": key[0], "segment": key[1], "all_segments": 0}
        _merge(merged[key], r)
        if r["variant_id"] is not None and r.get(SEND_BATCH) is not None and r["assigned"]:
            group = batches.setdefault(batch_label(r[SEND_BATCH]), {})
            group[str(r["variant_id"])] = group.get(str(r["variant_id"]), 0) + int(r["assigned"])
    return rest + list(merged.values()), dict(sorted(batches.items()))
