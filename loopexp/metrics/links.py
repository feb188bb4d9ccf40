"""Per-link click distribution: which link of the mail drew the human clicks, per variant.

The closed-loop question "which product was hardly clicked": human clicks (bot clicks excluded)
per normalised URL (fragment and tracking parameters such as ``utm_*`` stripped, see
:func:`loopexp.metrics.compile.normalize_url`) per variant, with the number of distinct clickers
and each link's share of its variant's human clicks. One small table (variants × links), computed
in the engine; the per-recipient frame never leaves it.
"""

from __future__ import annotations

import pandas as pd

from loopexp.events.schema import REQUIRED_COLUMNS
from loopexp.metrics.compile import DUCKDB, links_sql
from loopexp.metrics.engine import Source, _attach, _connect, validate_events

LINK_COLUMNS = ["variant_id", "link", "clicks", "clickers", "share"]


def order_links(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by variant, then most-clicked link first (ties by link), index reset."""
    frame = frame[LINK_COLUMNS].sort_values(
        ["variant_id", "clicks", "link"], ascending=[True, False, True]
    )
    frame["clicks"] = frame["clicks"].astype("int64")
    frame["clickers"] = frame["clickers"].astype("int64")
    frame["share"] = frame["share"].astype("float64")
    return frame.reset_index(drop=True)


def link_clicks(
    events: Source,
    assignment: Source,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
) -> pd.DataFrame:
    """Human clicks per normalised link per variant (valid, deduplicated events of assigned people).

    Events are validated exactly as for :func:`loopexp.metrics.compute_metrics` (quarantined and
    duplicate events never count); DuckDB runs within ``memory_limit`` as there.

    Returns:
        Columns ``variant_id, link, clicks, clickers, share`` (share of the variant's human clicks
        on links), most-clicked first within each variant.
    """
    with _connect(memory_limit, temp_directory) as (con, _):
        _attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
        _attach(con, "assignment_raw", assignment, "assignment", ("recipient_key", "variant_id"))
        con.execute(
            "CREATE VIEW assignment_src AS SELECT TRY_CAST(recipient_key AS VARCHAR) AS "
            "recipient_key, TRY_CAST(variant_id AS VARCHAR) AS variant_id FROM assignment_raw"
        )
        validate_events(con)
        query = links_sql(DUCKDB)
        frame = con.execute(query.sql, query.params).df()
    return order_links(frame)
