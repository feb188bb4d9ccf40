"""Staged rows become checked rows: the recipient, the quarantine reason, the event id.

What a staged row must hold to become an event is not here: it is ``STAGED_RULES`` in
:mod:`loopexp.events.validation`, where every quarantine rule of loopexp is defined; this module
applies them in ingest's one pass, with what is ingest's own: the recipient of a row (its key, else
its address), a keyed content-hash id for a row the provider gives none, and the ``checked`` view
over every staged part.
"""

from __future__ import annotations

import hashlib
import hmac

import duckdb

from loopexp.core.keys import HashKey
from loopexp.core.sql import sql_string
from loopexp.events.validation import DUCKDB, staged_reason_sql


def id_salt(key: HashKey) -> str:
    """The salt of content-hash event ids, derived from the hashing key."""
    # Content-hash ids are keyed too (a salt derived from the hashing key): a plain hash of a
    # record holding an address could be reversed by hashing guessed addresses.
    return hmac.new(key.secret, b"loopexp-event-id", hashlib.sha256).hexdigest()


def checked_sql(relation: str, salt: str) -> str:
    """Staged rows → checked rows, in SQL, in one pass.

    Adds the recipient (``who``: the key, else the normalised address), the quarantine reason
    (:func:`loopexp.events.validation.staged_reason_sql`: the adapter's, else the first of
    :data:`~loopexp.events.validation.STAGED_RULES` that holds) and a keyed content-hash id where
    the provider gives none; ``raw`` is kept for quarantined rows only.
    """
    return f"""
        SELECT * REPLACE (CASE WHEN quarantine_reason IS NOT NULL THEN raw END AS raw) FROM (
        SELECT * REPLACE (
                {staged_reason_sql(DUCKDB)} AS quarantine_reason,
                CASE WHEN event_id IS NULL OR event_id = '' THEN 'h' || left(sha256(
                    '{salt}' || chr(31) || coalesce(who, '') || chr(31)
                    || coalesce(event_type, '') || chr(31) || coalesce(id_basis, '')), 31)
                    ELSE event_id END AS event_id)
            FROM (SELECT *, coalesce(nullif(recipient_key, ''), lower(nullif(trim(address), '')))
                  AS who FROM ({relation})))"""


def create_checked(
    con: duckdb.DuckDBPyConnection, salt: str, parts: list[tuple[str, int, str]]
) -> None:
    """The ``checked`` view: every input record once, with ``part`` and ``rid`` naming its row.

    Rows staged one by one (``staged_rows``) are checked into a table here; files staged in bulk
    were checked as they were read (no second copy). ``input_no`` of a bulk-staged row is its
    file's first number plus its position in the file (the table keeps file order).
    """
    con.execute(
        f"CREATE TEMP TABLE checked_rows AS {checked_sql('SELECT * FROM staged_rows', salt)}"
    )
    con.execute("DROP TABLE staged_rows")
    selects = ["SELECT *, 0 AS part, rowid AS rid FROM checked_rows"]
    selects += [
        f"SELECT * REPLACE ({first_no} + rowid AS input_no), {sql_string(source)} AS source, "
        f"{i} AS part, rowid AS rid FROM {table}"
        for i, (table, first_no, source) in enumerate(parts, start=1)
    ]
    con.execute(f"CREATE TEMP VIEW checked AS {' UNION ALL BY NAME '.join(selects)}")
