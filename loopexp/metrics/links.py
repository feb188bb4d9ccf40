"""Per-link click distribution: which link of the mail drew the human clicks, per variant.

The closed-loop question "which product was hardly clicked": human clicks (bot clicks excluded)
per normalised URL (fragment and tracking parameters such as ``utm_*`` stripped, see
:func:`normalize_url`) per variant, with the number of distinct clickers and each link's share of
its variant's human clicks. One small table (variants × links), computed in the engine; the
per-recipient frame never leaves it.
"""

from __future__ import annotations

import re

import pandas as pd

from loopexp.events.schema import REQUIRED_COLUMNS
from loopexp.events.validation import DUCKDB, Dialect
from loopexp.metrics.compile import Compiled, Params
from loopexp.metrics.sources import Source, attach, connect
from loopexp.metrics.validated import validate_events

LINK_COLUMNS = ["variant_id", "link", "clicks", "clickers", "share"]


#: Query parameters that mark a link as tracked rather than a different page; stripped by
#: :func:`normalize_url` (and its SQL twin) before clicks are counted per link.
TRACKING_PARAMS: tuple[str, ...] = (
    "utm_*",
    "gclid",
    "dclid",
    "fbclid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "yclid",
    "igshid",
)


def _tracking_alternation() -> str:
    return "|".join(t.replace("*", "[^=&]*") for t in TRACKING_PARAMS)


def normalized_url_sql(expr: str, dialect: Dialect) -> str:
    """SQL for :func:`normalize_url` (same result in DuckDB and Spark; no backslashes needed).

    The query string is wrapped in ``&`` and every ``&`` doubled so that each parameter sits
    between its own pair of separators: one ``regexp_replace`` then drops every tracking parameter
    (RE2, DuckDB's regex engine, has no look-ahead).
    """
    r = dialect.replace_all
    no_fragment = f"regexp_replace({expr}, '#.*$', '')"
    base = f"regexp_extract({no_fragment}, '^[^?]*', 0)"
    query = f"regexp_extract({no_fragment}, '[?](.*)$', 1)"
    wrapped = f"concat('&', replace({query}, '&', '&&'), '&')"
    stripped = r(wrapped, f"(?i)&({_tracking_alternation()})(=[^&]*)?&", "&")
    clean = r(r(stripped, "&+", "&"), "^&|&$", "")
    host = f"regexp_extract({base}, '^[A-Za-z][A-Za-z0-9+.-]*://[^/]*', 0)"
    path = r(f"substr({base}, length({host}) + 1)", "/+$", "")
    return (
        f"concat(lower({host}), {path}, "
        f"CASE WHEN {clean} = '' THEN '' ELSE concat('?', {clean}) END)"
    )


def links_sql(
    dialect: Dialect, events: str = "valid_events", assignment: str = "assignment_src"
) -> Compiled:
    """Human clicks per normalised link per variant, and each link's share of its variant's."""
    p = Params(dialect)
    link = normalized_url_sql("e.url", dialect)
    sql = f"""
        WITH clicks AS (
            SELECT a.variant_id, {link} AS link, e.recipient_key
            FROM {events} e JOIN {assignment} a ON a.recipient_key = e.recipient_key
            WHERE e.event_type = {p.bind("click")} AND e.is_bot_click IS NOT TRUE
                AND e.url IS NOT NULL AND e.url <> ''
        )
        SELECT variant_id, link, count(*) AS clicks, count(DISTINCT recipient_key) AS clickers,
            CAST(count(*) AS DOUBLE) / sum(count(*)) OVER (PARTITION BY variant_id) AS share
        FROM clicks GROUP BY variant_id, link
    """
    return Compiled(sql, p.values)


def normalize_url(url: str) -> str:
    """A link as a page, not a tracked click: fragment and tracking parameters dropped.

    Tracking parameters are :data:`TRACKING_PARAMS` (``utm_*`` and click ids), case-insensitive;
    the scheme and host are lower-cased; trailing slashes of the path are dropped; the remaining
    query keeps its order. The reference for :func:`normalized_url_sql`.
    """
    no_fragment = url.split("#", 1)[0]
    base, _, query = no_fragment.partition("?")
    pattern = re.compile(f"^({_tracking_alternation()})$", re.IGNORECASE)
    kept = [kv for kv in query.split("&") if kv and not pattern.match(kv.split("=", 1)[0])]
    host = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*", base)
    head = host.group(0) if host else ""
    path = base[len(head) :].rstrip("/")
    return head.lower() + path + ("?" + "&".join(kept) if kept else "")


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
    with connect(memory_limit, temp_directory) as (con, _):
        attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
        attach(con, "assignment_raw", assignment, "assignment", ("recipient_key", "variant_id"))
        con.execute(
            "CREATE VIEW assignment_src AS SELECT TRY_CAST(recipient_key AS VARCHAR) AS "
            "recipient_key, TRY_CAST(variant_id AS VARCHAR) AS variant_id FROM assignment_raw"
        )
        validate_events(con)
        query = links_sql(DUCKDB)
        frame = con.execute(query.sql, query.params).df()
    return order_links(frame)
