"""The end of ingest: dedupe, flag machine opens and bot clicks, write, and count.

Reads the ``checked`` view (every input record once, see :mod:`loopexp.events.checks`) without
copying it: duplicates are ranked only for ids that repeat, the events are written in input order
(the same exports give the same bytes), the quarantine with every address replaced by its keyed
hash, and the summary counts every record once.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from loopexp.core.keys import EMAIL_PATTERN, HashKey, hash_address_array, hash_addresses
from loopexp.core.sql import sql_escape
from loopexp.events import bots
from loopexp.events.adapters.base import IGNORED_TYPE
from loopexp.events.config import IngestConfig
from loopexp.events.reader import IngestError
from loopexp.events.schema import EVENT_SCHEMA
from loopexp.events.summary import FileReport, IngestSummary


def hash_address_keys(con: duckdb.DuckDBPyConnection, key: HashKey) -> int:
    """Hash each distinct address once (the expensive part, in Python) into ``address_keys``.

    The addresses stay one Arrow column from DuckDB to the hash and back (no Python string per
    address on the way: 2 M distinct addresses at 10 M events).
    """
    addresses = (
        con.execute(
            "SELECT DISTINCT address FROM checked WHERE nullif(trim(address), '') IS NOT NULL "
            "AND recipient_key IS NULL AND quarantine_reason IS NULL"
        )
        .to_arrow_table()
        .column("address")
        .combine_chunks()
    )
    keys = pa.table({"address": addresses, "hashed": hash_address_array(addresses, key)})
    con.register("address_keys_src", keys)
    con.execute("CREATE TEMP TABLE address_keys AS SELECT * FROM address_keys_src")
    con.unregister("address_keys_src")
    return len(addresses)


def finish(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    config: IngestConfig,
    key: HashKey,
    reports: list[FileReport],
    assignment: str | Path | None,
) -> IngestSummary:
    """Dedupe, flag and write, reading the ``checked`` view (no copy of every record)."""
    n_dup = _rank_duplicates(con)
    events_path = _write_events(con, out / "events.parquet", config)
    quarantine_path = out / "quarantine.parquet"
    _write_quarantine(con, quarantine_path, key)
    # one scan of every record for the reasons, overall and per file
    per_file_reason = con.execute(
        "SELECT source, quarantine_reason, count(*) FROM checked GROUP BY ALL"
    ).fetchall()
    reasons = _reason_totals(per_file_reason)
    prefix = f"{IGNORED_TYPE}: "
    ignored_by_type = {
        r.removeprefix(prefix): n for r, n in sorted(reasons.items()) if r.startswith(prefix)
    }
    per_type = con.execute(
        "SELECT event_type, count(*), count(*) FILTER (WHERE is_machine_open), "
        "count(*) FILTER (WHERE is_bot_click) FROM flagged GROUP BY 1 ORDER BY 1"
    ).fetchall()
    by_type = {t: n for t, n, _, _ in per_type}
    removed = _removed_by_rule(con, assignment)
    matched = None
    if assignment is not None:  # the view _removed_by_rule made: how many events are the test's
        (matched,) = con.execute(
            "SELECT count(a.recipient_key) FROM flagged f LEFT JOIN assign_src a USING "
            "(recipient_key)"
        ).fetchone()
    _count_per_file(con, reports, per_file_reason)
    warnings = []
    if key.is_demo:
        warnings.append("addresses hashed with the public demo key: fine for simulated data only")
    return IngestSummary(
        input_records=int(sum(n for _, _, n in per_file_reason)),
        events=int(sum(by_type.values())),
        duplicates=int(n_dup),
        quarantined=int(sum(reasons.values())),
        machine_opens=int(sum(m for _, _, m, _ in per_type)),
        bot_clicks=int(sum(b for _, _, _, b in per_type)),
        by_type={str(k): int(v) for k, v in by_type.items()},
        quarantine_reasons={str(k): int(v) for k, v in reasons.items()},
        removed_by_rule=removed,
        files=reports,
        events_path=str(events_path),
        quarantine_path=str(quarantine_path),
        hash_key=key.source,
        warnings=warnings,
        ignored=sum(ignored_by_type.values()),
        ignored_by_type=ignored_by_type,
        assignment_matched=None if matched is None else int(matched),
        assignment_match_share=(
            None if matched is None else int(matched) / max(1, int(sum(by_type.values())))
        ),
    )


def _reason_totals(per_file_reason: list[tuple[str, str | None, int]]) -> dict[str, int]:
    """Quarantine reason → records, most frequent first."""
    totals: dict[str, int] = defaultdict(int)
    for _, reason, n in per_file_reason:
        if reason is not None:
            totals[str(reason)] += int(n)
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def _rank_duplicates(con: duckdb.DuckDBPyConnection) -> int:
    """The ``unique_events`` view and the number of duplicates left out of it.

    Duplicates are ranked (first in input order kept; ties broken on content, so the result
    does not depend on thread scheduling) only for ids that actually repeat; the events are the
    valid records less the duplicates ranked after the first, by their row (``part``, ``rid``).
    """
    # Candidates by a 64-bit hash of the id (an integer aggregate is far cheaper than one on
    # strings); a hash collision only adds a candidate, which the ranking by the id itself keeps.
    con.execute(
        """CREATE TEMP TABLE dup_keys AS
           SELECT hash(provider, event_id) AS id_hash FROM checked
           WHERE quarantine_reason IS NULL GROUP BY ALL HAVING count(*) > 1"""
    )
    con.execute(
        """CREATE TEMP TABLE dup_rows AS
           SELECT c.source, c.part, c.rid, row_number() OVER (
               PARTITION BY c.provider, c.event_id
               ORDER BY c.input_no, c.ts, c.event_type, c.who, c.message_id, c.url, c.user_agent,
                   c.ip, c.variant_id) AS dup_rank
           FROM checked c SEMI JOIN dup_keys d ON d.id_hash = hash(c.provider, c.event_id)
           WHERE c.quarantine_reason IS NULL"""
    )
    (n_dup,) = con.execute("SELECT count(*) FROM dup_rows WHERE dup_rank > 1").fetchone()
    if n_dup == 0:  # the common case: no anti-join at all
        con.execute(
            "CREATE TEMP VIEW unique_events AS SELECT * FROM checked "
            "WHERE quarantine_reason IS NULL"
        )
    else:
        con.execute(
            """CREATE TEMP VIEW unique_events AS
               SELECT c.* FROM checked c
               ANTI JOIN (SELECT part, rid FROM dup_rows WHERE dup_rank > 1) d
                   ON d.part = c.part AND d.rid = c.rid
               WHERE c.quarantine_reason IS NULL"""
        )
    return int(n_dup)


def _write_events(con: duckdb.DuckDBPyConnection, events_path: Path, config: IngestConfig) -> Path:
    """The flagged unique events as canonical Parquet, in input order; the ``flagged`` view."""
    email_re = sql_escape(EMAIL_PATTERN.pattern)
    select = ", ".join(
        f"regexp_replace(f.url, '{email_re}', '[address removed]', 'g') AS url"
        if f.name == "url"
        else "coalesce(f.recipient_key, k.hashed) AS recipient_key"
        if f.name == "recipient_key"
        else f"f.{f.name}"
        for f in EVENT_SCHEMA
    )
    # In input order (a total order: (provider, event_id) is unique among events), so the same
    # exports give the same bytes: `loopexp run` on an export folder stays idempotent (its data
    # fingerprint is the file's hash). Without the sort, parallel threads interleave rows
    # differently on every run of a large export. It costs ~0.5 CPU-s per 1 M events.
    con.execute("SET preserve_insertion_order = true")
    try:
        con.execute(
            f"COPY (SELECT {select} FROM ({bots.flag_sql('unique_events', config)}) f "
            "LEFT JOIN address_keys k ON k.address = f.address "
            "ORDER BY f.input_no, f.provider, f.event_id) "
            f"TO '{sql_escape(events_path)}' (FORMAT parquet)"
        )
    finally:
        con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"CREATE TEMP VIEW flagged AS SELECT * FROM read_parquet('{sql_escape(events_path)}')"
    )
    return events_path


def _count_per_file(
    con: duckdb.DuckDBPyConnection,
    reports: list[FileReport],
    per_file_reason: list[tuple[str, str | None, int]],
) -> None:
    """Each file's quarantined, ignored and duplicate records; its events are the rest."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for source, reason, n in per_file_reason:
        if reason is not None:
            counts[source][0] += int(n)
            counts[source][1] += int(n) if str(reason).startswith(IGNORED_TYPE) else 0
    dups = dict(
        con.execute(
            "SELECT source, count(*) FROM dup_rows WHERE dup_rank > 1 GROUP BY 1"
        ).fetchall()
    )
    for r in reports:
        r.quarantined, r.ignored = counts.get(r.path, [0, 0])
        r.duplicates = int(dups.get(r.path, 0))
        r.events = r.input_records - r.quarantined - r.duplicates


def _removed_by_rule(
    con: duckdb.DuckDBPyConnection, assignment: str | Path | None
) -> dict[str, dict[str, dict[str, int]]]:
    variant = "coalesce(f.variant_id, 'unknown')"
    join = ""
    if assignment is not None:
        path = sql_escape(assignment)
        fn = "read_csv_auto" if str(assignment).endswith((".csv", ".csv.gz")) else "read_parquet"
        try:
            con.execute(
                f"CREATE TEMP VIEW assign_src AS SELECT recipient_key, any_value(variant_id) AS "
                f"variant_id FROM {fn}('{path}') GROUP BY 1"
            )
        except duckdb.Error as exc:
            raise IngestError(
                f"{assignment}: cannot read the assignment (needs recipient_key, variant_id): {exc}"
            ) from None
        join = "LEFT JOIN assign_src a USING (recipient_key)"
        variant = "coalesce(f.variant_id, a.variant_id, 'unassigned')"
    rows = con.execute(
        f"SELECT bot_reason, {variant} AS v, event_type, count(*) FROM flagged f {join} "
        "WHERE bot_reason IS NOT NULL GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    removed: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for rule, v, event_type, n in rows:
        removed[rule].setdefault(str(v), {"open": 0, "click": 0})[event_type] = int(n)
    return dict(removed)


def _write_quarantine(con: duckdb.DuckDBPyConnection, path: Path, key: HashKey) -> None:
    """Quarantined records with reason and raw text, every address in it replaced by its hash."""
    rows = con.execute(
        "SELECT input_no, source, provider, quarantine_reason, raw FROM checked "
        "WHERE quarantine_reason IS NOT NULL ORDER BY input_no"
    ).to_arrow_table()
    raws = rows.column("raw").to_pylist()
    found = sorted({m.group(0) for r in raws if r for m in EMAIL_PATTERN.finditer(r)})
    hashed = dict(zip(found, hash_addresses(found, key), strict=True))
    masked = [
        EMAIL_PATTERN.sub(lambda m: f"<address {hashed[m.group(0)]}>", r) if r else r for r in raws
    ]
    reason = [_mask(r, hashed) for r in rows.column("quarantine_reason").to_pylist()]
    result = pa.table(
        {
            "input_no": rows.column("input_no"),
            "source": rows.column("source"),
            "provider": rows.column("provider"),
            "reason": pa.array(reason, pa.string()),
            "raw": pa.array(masked, pa.string()),
        }
    )
    pq.write_table(result, path)


def _mask(text: str | None, hashed: dict[str, str]) -> str | None:
    if not text:
        return text
    return EMAIL_PATTERN.sub(lambda m: f"<address {hashed.get(m.group(0), '')}>", text)
