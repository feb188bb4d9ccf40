"""The run's checks around the event validation: the assignment, the quarantine share, a match.

Errors say which file, what is wrong and what to do, and never show a recipient key that is not a
hash (:func:`show_key`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb

from loopexp.core.errors import EventsError
from loopexp.events.scope import SCOPE_REASONS
from loopexp.events.validation import DUCKDB, QUARANTINE_RULES
from loopexp.metrics.sources import Source, source_name


def show_key(key: str | None) -> str:
    """A recipient key as an error message may show it: never the key if it is not a hash.

    A hex key (the HMAC of :mod:`loopexp.core.keys`) is a pseudonym and is shown shortened; anything
    else is shown as a SHA-256 prefix plus its shape (letters→a, digits→9), which tells a user
    "these are customer ids, those are hashes" without showing either.
    """
    if key is None:
        return "NULL"
    if re.fullmatch(r"[0-9a-f]{16,64}", key):
        return key[:12] + "…"
    shape = re.sub(r"[0-9]", "9", re.sub(r"[^\W\d_]", "a", key)).replace("@", " at ")[:24]
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()[:10]} (shape {shape!r})"


def _blank_sql(column: str) -> str:
    """NULL, empty, or only what trim() removes (spaces, also Unicode ones).

    trim() copies every string: at 10 M keys the plain ``trim(x) = ''`` took 1.5 s alone, so it
    runs only on values starting with a space or a non-ASCII character.
    """
    return (
        f"({column} IS NULL OR {column} = '' "
        f"OR ((ascii({column}) = 32 OR ascii({column}) > 127) AND trim({column}) = ''))"
    )


#: The assignment check's hash of a recipient key (distinct hashes < rows: verify exactly).
ASSIGNMENT_KEY_HASH = "hash(recipient_key)"


def check_assignment(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    segments: Sequence[str] | None,
    variants: Sequence[str] | None,
) -> None:
    """Refuse an assignment that would count a recipient twice, or hold groups the spec lacks.

    One aggregate over the assignment (view ``assignment_src``) answers every check in the common
    (valid) case: blank fields, addresses, whether any key repeats (its 8-byte hash counted
    distinct: a collision can only suggest a repeat, which the exact query then verifies) and the
    segments and groups present. The details of an error are queried only when there is one.
    """
    where = source_name(source)
    (
        null_key,
        null_segment,
        null_variant,
        addresses,
        n_rows,
        n_hashes,
        segments_seen,
        variants_seen,
    ) = con.execute(
        f"SELECT count(*) FILTER (WHERE {_blank_sql('recipient_key')}), "
        f"count(*) FILTER (WHERE {_blank_sql('segment')}), "
        f"count(*) FILTER (WHERE {_blank_sql('variant_id')}), "
        f"count(*) FILTER (WHERE {DUCKDB.is_address('recipient_key')}), "
        f"count(*), count(DISTINCT {ASSIGNMENT_KEY_HASH}), "
        "list(DISTINCT segment), list(DISTINCT variant_id) FROM assignment_src"
    ).fetchone()
    _refuse_blanks(where, null_key, null_segment, null_variant)
    if addresses:
        raise EventsError(
            f"{where}: {addresses:,} recipient_key(s) of the assignment are e-mail addresses, not "
            "hashed keys. Make the assignment with `loopexp assign`, which hashes addresses "
            "(loopexp.core.keys), so that no address reaches the analysis or its outputs."
        )
    if n_hashes < n_rows:  # a repeated key, or a hash collision: count exactly
        _refuse_repeated_keys(con, where)
    for column, allowed, seen, noun in (
        ("segment", segments, segments_seen, "audience segments"),
        ("variant_id", variants, variants_seen, "groups (variants and holdout)"),
    ):
        if allowed is not None and not set(seen) <= set(allowed):
            _refuse_outside(con, where, column, allowed, noun)


def _refuse_blanks(where: str, null_key: int, null_segment: int, null_variant: int) -> None:
    parts = [
        f"{n:,} row(s) without a {col}"
        for n, col in (
            (null_key, "recipient_key"),
            (null_segment, "segment"),
            (null_variant, "variant_id"),
        )
        if n
    ]
    if parts:
        raise EventsError(
            f"{where}: assignment has {', '.join(parts)}. Every assigned recipient needs a key, a "
            "segment and a group: make the assignment again with `loopexp assign`."
        )


def _refuse_repeated_keys(con: duckdb.DuckDBPyConnection, where: str) -> None:
    dup_keys, extra_rows = con.execute(
        "SELECT count(*), coalesce(sum(n - 1), 0) FROM "
        "(SELECT count(*) AS n FROM assignment_src GROUP BY recipient_key HAVING count(*) > 1)"
    ).fetchone()
    if not dup_keys:  # only hashes collided
        return
    twice = "SELECT recipient_key FROM assignment_src GROUP BY 1 HAVING count(*) > 1"
    (cross,) = con.execute(
        "SELECT count(*) FROM (SELECT recipient_key FROM assignment_src "
        f"WHERE recipient_key IN ({twice}) GROUP BY 1 HAVING count(DISTINCT variant_id) > 1)"
    ).fetchone()
    examples = [
        show_key(k)
        for (k,) in con.execute(f"SELECT * FROM ({twice}) ORDER BY 1 LIMIT 3").fetchall()
    ]
    raise EventsError(
        f"{where}: {dup_keys:,} recipient_key(s) appear more than once in the assignment "
        f"({extra_rows:,} extra row(s); {cross:,} of them in more than one group), e.g. "
        f"{', '.join(examples)}. A recipient would be counted twice and the sample-ratio "
        "check would not notice: remove the duplicates or make the assignment again with "
        "`loopexp assign`."
    )


def _refuse_outside(
    con: duckdb.DuckDBPyConnection, where: str, column: str, allowed: Sequence[str], noun: str
) -> None:
    outside = con.execute(
        f"SELECT {column}, count(*) FROM assignment_src "
        f"WHERE {column} NOT IN (SELECT unnest(?)) GROUP BY 1 ORDER BY 2 DESC",
        [list(allowed)],
    ).fetchall()
    listed = ", ".join(f"{value!r} ({n:,})" for value, n in outside[:10])
    raise EventsError(
        f"{where}: the assignment has {column} values the spec's {noun} do not include: "
        f"{listed}; the spec allows {sorted(allowed)}. Was the assignment made from "
        "another spec? Make it again with `loopexp assign`, or fix the spec."
    )


DEFAULT_MAX_QUARANTINE_SHARE = 0.5

#: What to fix, per quarantine reason (from the rules that give the reasons).
_REASON_HINTS = {rule.reason: rule.hint for rule in QUARANTINE_RULES if rule.hint}


def quarantine_message(
    events: Source,
    n_events: int,
    reasons: dict[str, int],
    max_share: float,
    quarantine_path: str | Path | None,
) -> str:
    """Why a run stops on too many quarantined events: counts, top reasons, hints, the file."""
    quarantined = sum(reasons.values())
    listed = "; ".join(
        f"{reason}: {n:,}" + (f" ({_REASON_HINTS[reason]})" if reason in _REASON_HINTS else "")
        for reason, n in list(reasons.items())[:5]
    )
    where = (
        f"The quarantined events are in {quarantine_path}."
        if quarantine_path is not None
        else "Pass a quarantine path to see them."
    )
    return (
        f"{source_name(events)}: {quarantined:,} of {n_events:,} events "
        f"({quarantined / n_events:.0%}) were quarantined, more than the spec's "
        f"data.max_quarantine_share of {max_share:.0%}, so no decision is made on what is left. "
        f"Reasons: {listed}. {where} Fix the export (or its adapter), or raise "
        "data.max_quarantine_share if this share is expected."
    )


def no_match_message(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    assignment: Source,
    n_events: int,
    quarantined: int,
) -> str:
    """Why no event matched the assignment, with hashed samples of both sides' keys."""
    if n_events - quarantined <= 0:
        return (
            f"{source_name(events)}: no usable event ({n_events:,} events, {quarantined:,} "
            "quarantined): there is nothing to analyse. Check that the export is complete."
        )
    event_keys = [
        show_key(k)
        for (k,) in con.execute(
            "SELECT DISTINCT recipient_key FROM valid_events ORDER BY recipient_key LIMIT 3"
        ).fetchall()
    ]
    assigned_keys = [
        show_key(k)
        for (k,) in con.execute(
            "SELECT recipient_key FROM assignment_src ORDER BY recipient_key LIMIT 3"
        ).fetchall()
    ]
    return (
        f"no event of {source_name(events)} belongs to a recipient of the assignment "
        f"{source_name(assignment)}: the comparison cannot be made. Keys in the events look like "
        f"{', '.join(event_keys)}; keys in the assignment like {', '.join(assigned_keys)}. Are "
        "they from the same campaign, and hashed with the same key ($LOOPEXP_HASH_KEY)?"
    )


class QuarantineError(EventsError):
    """More events were quarantined than the spec allows: no decision on what is left."""


def check_quarantine_share(
    events: Source,
    n_events: int,
    reasons: dict[str, int],
    limit: float | None,
    quarantine_path: str | Path | None = None,
) -> None:
    """Raise :class:`QuarantineError` when more than ``limit`` of the events were quarantined.

    One rule for both engines: a run on Spark stops where the same run on DuckDB stops. Events
    outside the send's scope (:data:`loopexp.events.scope.SCOPE_REASONS`) are not malformed: they
    count neither as quarantined nor as events here.
    """
    n_events -= sum(n for r, n in reasons.items() if r in SCOPE_REASONS)
    malformed = {r: n for r, n in reasons.items() if r not in SCOPE_REASONS}
    if limit is not None and n_events and sum(malformed.values()) > limit * n_events:
        raise QuarantineError(
            quarantine_message(events, n_events, malformed, limit, quarantine_path)
        )
