"""Recipients per period and group, for the sample-ratio check over time.

The period of a recipient is the day of enrolment when the assignment has an ``enrolled_at``
column (a lifecycle flow), else the day of their first send (or delivery) event: the send batch
of a one-off send that went out over several days. Shared SQL of both engines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: The assignment column that dates a recipient's enrolment (continuous flows).
ENROLLED_AT = "enrolled_at"


def periods_sql(enrolled: bool, assignment: str, events: str = "valid_events") -> str:
    """Per (period, variant): assigned recipients (NULL period: no enrolment or send time)."""
    if enrolled:
        period = f"CAST(a.{ENROLLED_AT} AS DATE)"
        source = f"{assignment} a"
    else:
        period = "CAST(s.first_sent AS DATE)"
        source = (
            f"{assignment} a JOIN (SELECT recipient_key, min(ts) AS first_sent FROM {events} "
            "WHERE event_type IN ('send', 'delivered') GROUP BY recipient_key) s "
            "ON CAST(a.recipient_key AS STRING) = s.recipient_key"
        )
    return (
        f"SELECT CAST({period} AS STRING) AS period, CAST(a.variant_id AS STRING) AS variant_id, "
        f"count(*) AS n FROM {source} GROUP BY 1, 2"
    )


def by_period(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    """Period → variant → recipients from the rows of :func:`periods_sql` (NULLs left out)."""
    out: dict[str, dict[str, int]] = {}
    for period, variant, n in rows:
        if period is not None and variant is not None:
            out.setdefault(str(period), {})[str(variant)] = int(n)
    return dict(sorted(out.items()))
