"""Recipients per day of enrolment and group, for the sample-ratio check over time.

A lifecycle flow's assignment dates each recipient's entry (``enrolled_at``); a split broken on
one day can hide in a long flow's totals. Counted from the assignment alone (no scan of the
events), by the same SQL in both engines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
