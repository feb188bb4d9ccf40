"""``loopexp ingest``: ESP exports in, one canonical event table out, nothing lost on the way.

Every input record ends up in exactly one place: the events (``events.parquet``), the duplicates
(counted; same provider event id, or same content when the provider gives no id), or the quarantine
(``quarantine.parquet``, with the reason and the raw record). So
``input_records == events + duplicates + quarantined`` always holds, and the summary says so.

Addresses are hashed on the way in with :func:`loopexp.core.keys.hash_addresses` (distinct addresses
once, then joined back in DuckDB), the same keyed hash ``loopexp assign`` uses. No raw address is
written anywhere: in quarantined raw records every address is replaced by its keyed hash too.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import hmac
import json
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from loopexp.core.errors import InputError
from loopexp.core.keys import EMAIL_PATTERN, HashKey, hash_addresses
from loopexp.events import bots, reader
from loopexp.events.adapters import (
    braze,
    klaviyo,
    mailchimp,
    mailgun,
    postmark,
    sendgrid,
    ses,
    table,
)
from loopexp.events.adapters.base import IGNORED_TYPE, STAGE_FIELDS, Context, RecordError
from loopexp.events.avro import AVRO_SUFFIXES, avro_units
from loopexp.events.config import IngestConfig
from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS

#: Python adapters of nested / irregular JSON payloads, in detection order.
JSON_ADAPTERS: tuple[ModuleType, ...] = (mailgun, ses, postmark, braze, klaviyo, mailchimp)
#: Every value ``--format`` accepts.
FORMATS: tuple[str, ...] = (
    "auto",
    "sendgrid",
    *(a.NAME for a in JSON_ADAPTERS if a is not mailchimp),
    "mailchimp",
    "mailchimp-csv",
    "table",
    "canonical",
)
SUMMARY_VERSION = "1"

_STAGE_TYPES = {
    "ts": "TIMESTAMPTZ",
    "is_machine_open": "BOOLEAN",
    "is_bot_click": "BOOLEAN",
    "revenue": "DOUBLE",
}
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_JSON_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz", ".txt")


class IngestError(InputError):
    """An export that cannot be read at all: which file, what is wrong, what to do."""


@dataclass
class FileReport:
    """One input file: the format it was read as and how many records it held."""

    path: str
    format: str
    input_records: int
    events: int = 0
    """Records of this file kept as events (a duplicate of an earlier file's event is not)."""
    duplicates: int = 0
    quarantined: int = 0
    ignored: int = 0
    """Of ``quarantined``: documented provider types that are not outcomes."""


@dataclass
class IngestSummary:
    """What ``loopexp ingest`` did; ``input_records == events + duplicates + quarantined``."""

    input_records: int
    events: int
    duplicates: int
    quarantined: int
    machine_opens: int
    bot_clicks: int
    by_type: dict[str, int]
    quarantine_reasons: dict[str, int]
    removed_by_rule: dict[str, dict[str, dict[str, int]]]
    """rule → variant → {"open": n, "click": n}: opens and clicks each rule flagged."""
    files: list[FileReport]
    events_path: str
    quarantine_path: str
    hash_key: str
    """Where the hashing key came from (``env ...``, ``file ...`` or ``demo``), never the key."""
    schema_version: str = SUMMARY_VERSION
    warnings: list[str] = field(default_factory=list)
    distinct_addresses: int = 0
    """Addresses hashed (each distinct address once)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    """Seconds spent reading + mapping, hashing addresses, and deduping/flagging/writing."""
    ignored: int = 0
    """Of ``quarantined``: records of documented provider types that are not outcomes (SendGrid
    ``dropped``, SES ``Reject``, ...). In the quarantine file (reason ``ignored_type: ...``) so
    nothing is lost, but not errors: ``--strict`` fails only on :attr:`errors`."""
    ignored_by_type: dict[str, int] = field(default_factory=dict)
    """``provider:type`` → records ignored."""

    @property
    def errors(self) -> int:
        """Quarantined records that are errors (unparseable, unknown type, no recipient, ...)."""
        return self.quarantined - self.ignored

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``--json`` output), with ``errors`` = quarantined - ignored."""
        return {**asdict(self), "errors": self.errors}


def ingest(
    paths: list[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    key: HashKey,
    fmt: str = "auto",
    config: IngestConfig | None = None,
    assignment: str | Path | None = None,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
) -> IngestSummary:
    """Read ESP exports into ``out_dir/events.parquet`` (canonical) and ``quarantine.parquet``.

    Args:
        paths: files, folders (every export file inside) or globs.
        out_dir: folder for ``events.parquet``, ``quarantine.parquet`` and ``ingest_summary.json``.
        key: the hashing key (:func:`loopexp.core.keys.load_hash_key`), the one ``assign`` used.
        fmt: one of :data:`FORMATS`; ``auto`` recognises each file by its content.
        config: variant fields and bot-rule thresholds (defaults when None).
        assignment: optional assignment Parquet/CSV, to report bot removals per variant for
            events that carry no variant.
        memory_limit: DuckDB's memory limit, past which it spills to ``temp_directory``
            [default: $LOOPEXP_DUCKDB_MEMORY_LIMIT, else half the memory available].
        temp_directory: where to spill [default: $LOOPEXP_DUCKDB_TEMP_DIR, else a temporary
            folder removed afterwards].
    """
    config = config or IngestConfig()
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    files = expand_paths(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limit, spill = config.duckdb_resources(memory_limit, temp_directory)
    own_spill = spill is None
    spill = spill if spill is not None else tempfile.mkdtemp(prefix="loopexp-ingest-")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")  # less memory; order is not kept
        # Bounded memory: past the limit DuckDB spills to disk instead of growing without end.
        try:
            con.execute(f"SET memory_limit = '{_sql_path(limit)}'")
        except duckdb.Error:
            raise IngestError(
                f"memory limit {limit!r} is not a size DuckDB understands; write it like '2GB' "
                f"or '512MiB' (spec data.memory_limit or ${config.DUCKDB_MEMORY_LIMIT})"
            ) from None
        con.execute(f"SET temp_directory = '{_sql_path(spill)}'")
        with contextlib.suppress(duckdb.Error):
            con.execute("SET enable_progress_bar = false")
        cols = ", ".join(f'"{c}" {_STAGE_TYPES.get(c, "VARCHAR")}' for c in STAGE_FIELDS)
        con.execute(f"CREATE TEMP TABLE staged_rows (input_no BIGINT, source VARCHAR, {cols})")
        salt = _id_salt(key)
        reports = []
        parts: list[tuple[str, int, str]] = []  # tables staged in bulk: first number, source
        next_no = 1
        started = time.perf_counter()
        for path in files:
            file_format, n, table_name = _stage_file(con, path, fmt, config, next_no, salt)
            reports.append(FileReport(str(path), file_format, n))
            if table_name:
                parts.append((table_name, next_no, str(path)))
            next_no += n
        _create_checked(con, salt, parts)
        read_done = time.perf_counter()
        n_addresses = _hash_addresses(con, key)
        hash_done = time.perf_counter()
        summary = _finish(con, out, config, key, reports, assignment)
        summary.distinct_addresses = n_addresses
        summary.timings_s = {
            "read": round(read_done - started, 3),
            "hash": round(hash_done - read_done, 3),
            "finish": round(time.perf_counter() - hash_done, 3),
        }
        _write_summary(summary, out)
        return summary
    finally:
        con.close()
        if own_spill:
            shutil.rmtree(spill, ignore_errors=True)


def _id_salt(key: HashKey) -> str:
    # Content-hash ids are keyed too (a salt derived from the hashing key): a plain hash of a
    # record holding an address could be reversed by hashing guessed addresses.
    return hmac.new(key.secret, b"loopexp-event-id", hashlib.sha256).hexdigest()


def _checked_sql(relation: str, salt: str) -> str:
    """Staged rows → checked rows, in SQL.

    Adds the recipient (``who``), the common quarantine checks, a keyed content-hash id where the
    provider gives none; ``raw`` is kept for quarantined rows only.
    """
    # list_contains, not NOT IN: an IN list is planned as a join, which need not keep row order
    known = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    return f"""
        SELECT * REPLACE (CASE WHEN quarantine_reason IS NOT NULL THEN raw END AS raw) FROM (
        SELECT * REPLACE (
                CASE
                    WHEN quarantine_reason IS NOT NULL THEN quarantine_reason
                    WHEN who IS NULL THEN 'missing recipient'
                    WHEN ts IS NULL THEN 'missing or unparseable timestamp'
                    WHEN event_type IS NULL OR NOT list_contains([{known}], event_type)
                        THEN 'unknown event type'
                END AS quarantine_reason,
                CASE WHEN event_id IS NULL OR event_id = '' THEN 'h' || left(sha256(
                    '{salt}' || chr(31) || coalesce(who, '') || chr(31)
                    || coalesce(event_type, '') || chr(31) || coalesce(id_basis, '')), 31)
                    ELSE event_id END AS event_id)
            FROM (SELECT *, coalesce(nullif(recipient_key, ''), lower(nullif(trim(address), '')))
                  AS who FROM ({relation})))"""


def _create_checked(
    con: duckdb.DuckDBPyConnection, salt: str, parts: list[tuple[str, int, str]]
) -> None:
    """The ``checked`` view: every input record once, with ``part`` and ``rid`` naming its row.

    Rows staged one by one (``staged_rows``) are checked into a table here; files staged in bulk
    were checked as they were read (no second copy). ``input_no`` of a bulk-staged row is its
    file's first number plus its position in the file (the table keeps file order).
    """
    con.execute(
        f"CREATE TEMP TABLE checked_rows AS {_checked_sql('SELECT * FROM staged_rows', salt)}"
    )
    con.execute("DROP TABLE staged_rows")
    selects = ["SELECT *, 0 AS part, rowid AS rid FROM checked_rows"]
    selects += [
        f"SELECT * REPLACE ({first_no} + rowid AS input_no), '{_sql_path(source)}' AS source, "
        f"{i} AS part, rowid AS rid FROM {table}"
        for i, (table, first_no, source) in enumerate(parts, start=1)
    ]
    con.execute(f"CREATE TEMP VIEW checked AS {' UNION ALL BY NAME '.join(selects)}")


def ingest_to_canonical(
    paths: list[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    key: HashKey,
    fmt: str = "auto",
    config: IngestConfig | None = None,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
) -> Path:
    """Ingest raw exports and return the path of the canonical ``events.parquet`` (for ``run``)."""
    summary = ingest(
        paths,
        out_dir,
        key=key,
        fmt=fmt,
        config=config,
        memory_limit=memory_limit,
        temp_directory=temp_directory,
    )
    return Path(summary.events_path)


def expand_paths(paths: list[str | Path] | str | Path) -> list[Path]:
    """Files named, found by glob, or inside a folder (export files only); error when none."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            inside = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and not f.name.startswith(".")
                and f.name.lower().endswith(_TABLE_SUFFIXES + _JSON_SUFFIXES + AVRO_SUFFIXES)
            )
            if not inside:
                raise IngestError(
                    f"{p}: folder holds no export file "
                    "(.json, .ndjson, .jsonl, .csv, .parquet, .avro)"
                )
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            found_by_glob = glob.glob(str(p), recursive=True)  # ** spans folders (Currents)
            matches = sorted(Path(m) for m in found_by_glob if Path(m).is_file())
            if not matches:
                raise IngestError(f"{p}: no such file; check the path (globs are allowed)")
            found += matches
    return list(dict.fromkeys(found))


# --- reading files --------------------------------------------------------------------------


def _stage_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: str,
    config: IngestConfig,
    first_no: int,
    salt: str,
) -> tuple[str, int, str | None]:
    """Stage one file: its format, its record count, and its checked table.

    The table is None when the file's rows went to ``staged_rows`` (checked later).
    """
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return (*_stage_parquet(con, path, fmt, config, first_no), None)
        if name.endswith(AVRO_SUFFIXES):
            return (*_stage_avro(con, path, fmt, config, first_no), None)
        if name.endswith((".csv", ".csv.gz")) or fmt in ("mailchimp-csv", "table"):
            return (*_stage_csv(con, path, fmt, config, first_no), None)
        return _stage_json(con, path, fmt, config, first_no, salt)
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _stage_avro(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, config: IngestConfig, first_no: int
) -> tuple[str, int]:
    """A Braze Currents Avro file: each record through the Braze adapter (or quarantined)."""
    if fmt not in ("auto", braze.NAME):
        raise IngestError(
            f"{path}: an Avro file is read as a Braze Currents export; use --format auto or braze"
        )
    rows = []
    for unit in avro_units(path):
        rows += _normalize_unit(braze, unit, config, str(path))
    return braze.NAME, _insert_rows(con, rows, first_no, str(path))


#: Bytes read to tell a JSON file's shape and provider (the whole file only when not enough).
_HEAD_BYTES = 1 << 20


def _stage_json(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: str,
    config: IngestConfig,
    first_no: int,
    salt: str,
) -> tuple[str, int, str | None]:
    # A plain file's shape and provider are told from its head: a SendGrid export of gigabytes is
    # then read by DuckDB alone, never decoded in Python.
    plain = not path.name.lower().endswith(".gz") and not reader.has_bom(path)
    whole = not plain or path.stat().st_size <= _HEAD_BYTES
    text = reader.read_text(path) if whole else reader.read_head(path, _HEAD_BYTES)
    if not whole and (not text.strip() or ("\n" not in text and text.lstrip()[:1] != "[")):
        text, whole = reader.read_text(path), True  # no whole first record in the head
    if not text.strip():
        return fmt if fmt != "auto" else "empty", 0, None
    shape = reader.shape_of(text)
    provider = fmt if fmt != "auto" else _detect_json(path, text, final=whole)
    if provider is None or (shape == "document" and not whole):
        text, whole = reader.read_text(path), True
        shape = reader.shape_of(text)
        provider = provider or _detect_json(path, text)
    if provider == "sendgrid":
        if plain and shape in ("array", "ndjson"):
            table = f"staged_fast_{first_no}"
            wrap = lambda sql: _checked_sql(sql, salt)  # noqa: E731
            n = sendgrid.stage_fast(con, str(path), shape, config, first_no, table, wrap)
            if n is not None:
                return provider, n, table
            if shape == "ndjson":
                try:
                    return provider, sendgrid.stage_lines(con, str(path), config, first_no), None
                except (duckdb.Error, UnicodeError):
                    pass  # e.g. invalid UTF-8: split in Python, which quarantines per line
        text = text if whole else reader.read_text(path)
        return provider, _stage_sendgrid_units(con, path, text, config, first_no), None
    text = text if whole else reader.read_text(path)
    adapter = {a.NAME: a for a in JSON_ADAPTERS}.get(provider)
    if adapter is None:
        raise IngestError(
            f"{path}: format {provider!r} is for CSV / Parquet files, not JSON; "
            "use --format auto or a JSON format"
        )
    rows = []
    for unit in reader.json_units(text):
        rows += _normalize_unit(adapter, unit, config, str(path))
    return provider, _insert_rows(con, rows, first_no, str(path)), None


def _stage_sendgrid_units(
    con: duckdb.DuckDBPyConnection, path: Path, text: str, config: IngestConfig, first_no: int
) -> int:
    """Split in Python (salvaging truncated arrays, catching bad bytes), map in SQL."""
    units = list(reader.json_units(text))
    # Records that failed to split are staged as quarantine rows; the rest go through SQL.
    good = [(i, u.raw) for i, u in enumerate(units) if u.reason is None]
    bad = [
        (i, _quarantine_row(u.raw, u.reason or "", "sendgrid"))
        for i, u in enumerate(units)
        if u.reason
    ]
    if good:
        sendgrid.stage_texts(con, good, config, first_no, str(path))
    if bad:
        _insert_rows(con, [r for _, r in bad], first_no, str(path), [i for i, _ in bad])
    return len(units)


def _detect_json(path: Path, text: str, *, final: bool = True) -> str | None:
    """The provider of the first parseable record.

    None when ``text`` is only the file's head and its first record is not complete in it
    (``final`` False); an :class:`IngestError` when the record is no known provider's.
    """
    for unit in reader.json_units(text):
        if unit.reason is not None:
            if not final:
                return None
            continue
        value = unit.value
        if sendgrid.detect(value):
            return "sendgrid"
        for adapter in JSON_ADAPTERS:
            if adapter.detect(value):
                return adapter.NAME
        break
    if not final:
        return None
    raise IngestError(
        f"{path}: not recognised as any supported ESP export (SendGrid, Mailgun, SES, Postmark, "
        "Mailchimp, Braze, Klaviyo); the first record's keys do not match. Pass --format to "
        "name it, or map a CSV/Parquet table's columns in the spec's ingest.columns"
    )


def _normalize_unit(adapter: ModuleType, unit: reader.Unit, config: IngestConfig, source: str):
    if unit.reason is not None:
        return [_quarantine_row(unit.raw, unit.reason, adapter.NAME)]
    rows = []
    try:
        expanded = list(adapter.expand(unit.value))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return [_quarantine_row(unit.raw, f"malformed {adapter.NAME} page ({exc})", adapter.NAME)]
    for record, ctx in expanded:
        rows += _normalize_record(adapter, record, ctx, config, adapter.NAME)
    return rows


def _normalize_record(
    adapter: ModuleType, record: Any, ctx: Context, config: IngestConfig, provider: str
) -> list[dict]:
    raw = _raw_text(record)
    try:
        rows = adapter.normalize(record, ctx, config)
    except RecordError as exc:
        return [_quarantine_row(raw, str(exc), provider)]
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        return [
            _quarantine_row(
                raw, f"malformed {provider} record ({type(exc).__name__}: {exc})", provider
            )
        ]
    if not rows:
        return [_quarantine_row(raw, f"{provider} record without an event", provider)]
    for r in rows:
        r.setdefault("provider", provider)
        r["raw"] = raw
    return rows


def _raw_text(record: Any) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(record)


def _quarantine_row(raw: str, reason: str, provider: str) -> dict:
    return {"provider": provider, "raw": raw, "quarantine_reason": reason}


def _insert_rows(
    con: duckdb.DuckDBPyConnection,
    rows: list[dict],
    first_no: int,
    source: str,
    offsets: list[int] | None = None,
) -> int:
    if not rows:
        return 0
    columns: dict[str, list] = {c: [] for c in STAGE_FIELDS}
    for r in rows:
        for c in STAGE_FIELDS:
            columns[c].append(r.get(c))
    arrow_types = {
        "ts": pa.timestamp("us", tz="UTC"),
        "is_machine_open": pa.bool_(),
        "is_bot_click": pa.bool_(),
        "revenue": pa.float64(),
    }
    data = {c: pa.array(v, arrow_types.get(c, pa.string())) for c, v in columns.items()}
    offsets = offsets if offsets is not None else list(range(len(rows)))
    data["input_no"] = pa.array([first_no + i for i in offsets], pa.int64())
    data["source"] = pa.array([source] * len(rows), pa.string())
    con.register("py_rows", pa.table(data))
    try:
        con.execute("INSERT INTO staged_rows BY NAME SELECT * FROM py_rows")
    finally:
        con.unregister("py_rows")
    return len(rows)


def _stage_csv(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, config: IngestConfig, first_no: int
) -> tuple[str, int]:
    text = reader.read_text(path)
    header = [reader.normalise_header(h) for h in reader.csv_header(text)]
    if not header:
        return fmt if fmt != "auto" else "empty", 0
    is_mailchimp = fmt in ("mailchimp-csv", "mailchimp") or (
        fmt == "auto" and set(header) >= mailchimp.CSV_COLUMNS and not config.columns
    )
    rows: list[dict] = []
    if is_mailchimp:
        missing = sorted(mailchimp.CSV_COLUMNS - set(header))
        if missing:
            raise IngestError(
                f"{path}: a Mailchimp activity CSV needs columns {sorted(mailchimp.CSV_COLUMNS)}; "
                f"missing {missing} (header: {header})"
            )
        for unit in reader.csv_units(text):
            if unit.reason:
                rows.append(_quarantine_row(unit.raw, unit.reason, "mailchimp"))
            else:
                rows += _normalize_record(mailchimp, unit.value, Context(), config, "mailchimp")
                for r in rows[-1:]:
                    r["raw"] = unit.raw
        return "mailchimp-csv", _insert_rows(con, rows, first_no, str(path))
    mapping = _table_mapping(path, header, config)
    ctx = Context({"mapping": mapping, "provider": "csv"})
    for unit in reader.csv_units(text):
        if unit.reason:
            rows.append(_quarantine_row(unit.raw, unit.reason, "csv"))
        else:
            rows += _normalize_record(table, unit.value, ctx, config, "csv")
            rows[-1]["raw"] = unit.raw
    return "table", _insert_rows(con, rows, first_no, str(path))


def _table_mapping(path: Path, header: list[str], config: IngestConfig) -> dict[str, str]:
    norm = IngestConfig(
        **{
            **config.model_dump(),
            "columns": {k: reader.normalise_header(v) for k, v in config.columns.items()},
        }
    )
    missing = table.missing_columns(header, norm)
    if missing:
        raise IngestError(
            f"{path}: cannot find column(s) {missing} (header: {header}). Map the file's columns "
            "to canonical ones in the spec's ingest.columns (e.g. email: 'Email Address', "
            f"ts: 'Timestamp', event_type: 'Action'), or pass --format with its provider. "
            f"Canonical columns: {', '.join(REQUIRED_COLUMNS)}"
        )
    return table.mapping(header, norm)


def _stage_parquet(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, config: IngestConfig, first_no: int
) -> tuple[str, int]:
    try:
        data = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({exc}); re-export it") from None
    header = [reader.normalise_header(c) for c in data.column_names]
    data = data.rename_columns(header)
    mapping = _table_mapping(path, header, config)
    ctx = Context({"mapping": mapping, "provider": "parquet"})
    rows: list[dict] = []
    for record in data.to_pylist():
        rows += _normalize_record(table, record, ctx, config, "parquet")
    kind = "canonical" if set(REQUIRED_COLUMNS) <= set(header) else "table"
    return kind, _insert_rows(con, rows, first_no, str(path))


# --- hashing, dedupe, bots, output -----------------------------------------------------------


def _hash_addresses(con: duckdb.DuckDBPyConnection, key: HashKey) -> int:
    """Hash each distinct address once (the expensive part, in Python) into ``address_keys``."""
    addresses = (
        con.execute(
            "SELECT DISTINCT address FROM checked WHERE nullif(trim(address), '') IS NOT NULL "
            "AND recipient_key IS NULL AND quarantine_reason IS NULL"
        )
        .to_arrow_table()
        .column("address")
        .to_pylist()
    )
    keys = pa.table(
        {
            "address": pa.array(addresses, pa.string()),
            "hashed": pa.array(hash_addresses(addresses, key), pa.string()),
        }
    )
    con.register("address_keys_src", keys)
    con.execute("CREATE TEMP TABLE address_keys AS SELECT * FROM address_keys_src")
    con.unregister("address_keys_src")
    return len(addresses)


def _finish(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    config: IngestConfig,
    key: HashKey,
    reports: list[FileReport],
    assignment: str | Path | None,
) -> IngestSummary:
    """Dedupe, flag and write, reading the ``checked`` view (no copy of every record).

    Duplicates are ranked (first in input order kept; ties broken on content, so the result
    does not depend on thread scheduling) only for ids that actually repeat; the events are the
    valid records less the duplicates ranked after the first, by their row (``part``, ``rid``).
    """
    email_re = EMAIL_PATTERN.pattern.replace("'", "''")
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
    events_path = out / "events.parquet"
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
            f"TO '{_sql_path(events_path)}' (FORMAT parquet)"
        )
    finally:
        con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"CREATE TEMP VIEW flagged AS SELECT * FROM read_parquet('{_sql_path(events_path)}')"
    )
    quarantine_path = out / "quarantine.parquet"
    _write_quarantine(con, quarantine_path, key)

    # one scan of every record for the reasons, overall and per file
    per_file_reason = con.execute(
        "SELECT source, quarantine_reason, count(*) FROM checked GROUP BY ALL"
    ).fetchall()
    n_input = sum(n for _, _, n in per_file_reason)
    totals: dict[str, int] = defaultdict(int)
    for _, reason, n in per_file_reason:
        if reason is not None:
            totals[str(reason)] += int(n)
    reasons = dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))
    n_quarantined = sum(reasons.values())
    prefix = f"{IGNORED_TYPE}: "
    ignored_by_type = {
        r.removeprefix(prefix): n for r, n in sorted(reasons.items()) if r.startswith(prefix)
    }
    per_type = con.execute(
        "SELECT event_type, count(*), count(*) FILTER (WHERE is_machine_open), "
        "count(*) FILTER (WHERE is_bot_click) FROM flagged GROUP BY 1 ORDER BY 1"
    ).fetchall()
    by_type = {t: n for t, n, _, _ in per_type}
    n_events = sum(by_type.values())
    machine = sum(m for _, _, m, _ in per_type)
    bot = sum(b for _, _, _, b in per_type)
    removed = _removed_by_rule(con, assignment)
    _count_per_file(con, reports, per_file_reason)
    warnings = []
    if key.is_demo:
        warnings.append("addresses hashed with the public demo key: fine for simulated data only")
    summary = IngestSummary(
        input_records=int(n_input),
        events=int(n_events),
        duplicates=int(n_dup),
        quarantined=int(n_quarantined),
        machine_opens=int(machine),
        bot_clicks=int(bot),
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
    )
    return summary


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


def _write_summary(summary: IngestSummary, out: Path) -> None:
    (out / "ingest_summary.json").write_text(json.dumps(summary.to_dict(), indent=2), "utf-8")


def _removed_by_rule(
    con: duckdb.DuckDBPyConnection, assignment: str | Path | None
) -> dict[str, dict[str, dict[str, int]]]:
    variant = "coalesce(f.variant_id, 'unknown')"
    join = ""
    if assignment is not None:
        path = _sql_path(assignment)
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


def _sql_path(path: str | Path) -> str:
    return str(path).replace("'", "''")


def canonical_columns_ok(path: str | Path) -> bool:
    """True when ``path`` is a Parquet file with the canonical required columns."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        return False
    return set(REQUIRED_COLUMNS) <= set(names)
