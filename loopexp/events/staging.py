"""Staging one export file: the reader splits it into records, its adapter maps them to rows.

The file's kind (JSON, CSV, Parquet, or a type one adapter reads itself) comes from its suffix or
the ``--format``; its adapter from the format or, with ``auto``, from the registry's ``detect``. An
adapter may stage a whole file in DuckDB (``stage_bulk``); every other record goes through its
``normalize``, and what cannot be read or mapped becomes a quarantine row with the reason. Rows go
to the ``staged_rows`` table (or, staged in bulk, to a checked table of their own).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from loopexp.events import reader
from loopexp.events.adapters import registry
from loopexp.events.adapters.base import STAGE_FIELDS, Context, RecordError
from loopexp.events.adapters.registry import CSV, JSON, PARQUET, Adapter, BulkJob
from loopexp.events.config import IngestConfig
from loopexp.events.reader import IngestError

#: Bytes read to tell a JSON file's shape and provider (the whole file only when not enough).
HEAD_BYTES = 1 << 20

_STAGE_TYPES = {
    "ts": "TIMESTAMPTZ",
    "is_machine_open": "BOOLEAN",
    "is_bot_click": "BOOLEAN",
    "revenue": "DOUBLE",
}
_ARROW_TYPES = {
    "ts": pa.timestamp("us", tz="UTC"),
    "is_machine_open": pa.bool_(),
    "is_bot_click": pa.bool_(),
    "revenue": pa.float64(),
}


def create_staged_rows(con: duckdb.DuckDBPyConnection) -> None:
    """The ``staged_rows`` table: input number, source file and :data:`STAGE_FIELDS`."""
    cols = ", ".join(f'"{c}" {_STAGE_TYPES.get(c, "VARCHAR")}' for c in STAGE_FIELDS)
    con.execute(f"CREATE TEMP TABLE staged_rows (input_no BIGINT, source VARCHAR, {cols})")


def stage_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: str,
    config: IngestConfig,
    first_no: int,
    check: Callable[[str], str],
) -> tuple[str, int, str | None]:
    """Stage one file: the format it was read as, its record count, and its checked table.

    The table is None when the file's rows went to ``staged_rows`` (checked later); ``check``
    turns a staged-row query into a checked one, for an adapter that checks while it reads.
    """
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return (*_stage_parquet(con, path, fmt, config, first_no), None)
        own = registry.own_reader(path)
        if own is not None:
            return (*_stage_own(con, own, path, fmt, config, first_no), None)
        if name.endswith((".csv", ".csv.gz")) or registry.forced_kind(fmt) == CSV:
            return (*_stage_csv(con, path, fmt, config, first_no), None)
        return _stage_json(con, path, fmt, config, first_no, check)
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _stage_own(
    con: duckdb.DuckDBPyConnection,
    adapter: Adapter,
    path: Path,
    fmt: str,
    config: IngestConfig,
    first_no: int,
) -> tuple[str, int]:
    """A file of a type only its adapter reads (e.g. Avro): each record through the adapter."""
    if fmt != "auto" and fmt not in adapter.formats:
        raise IngestError(
            f"{path}: this file type is read as {adapter.own_files or adapter.name}; "
            f"use --format auto or {adapter.name}"
        )
    return adapter.name, normalize_into(
        con, adapter, adapter.read_units(path), config, first_no, path
    )


def _read_json_text(path: Path, fmt: str) -> tuple[str, bool, bool, Adapter | None]:
    """A JSON file's text, whether it is whole, whether it is plain, and its adapter.

    The text is the file's head when that tells enough; plain means DuckDB can read the file
    itself (neither compressed nor with a byte-order mark); no adapter for an empty file.
    """
    # A plain file's shape and provider are told from its head: a bulk export of gigabytes is
    # then read by DuckDB alone, never decoded in Python.
    plain = not path.name.lower().endswith(".gz") and not reader.has_bom(path)
    whole = not plain or path.stat().st_size <= HEAD_BYTES
    text = reader.read_text(path) if whole else reader.read_head(path, HEAD_BYTES)
    if not whole and (not text.strip() or ("\n" not in text and text.lstrip()[:1] != "[")):
        text, whole = reader.read_text(path), True  # no whole first record in the head
    if not text.strip():
        return text, whole, plain, None
    adapter = _json_adapter(path, fmt) if fmt != "auto" else _detect(path, text, final=whole)
    if adapter is None or (reader.shape_of(text) == "document" and not whole):
        text, whole = reader.read_text(path), True
        adapter = adapter or _detect(path, text)
    return text, whole, plain, adapter


def _stage_json(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    fmt: str,
    config: IngestConfig,
    first_no: int,
    check: Callable[[str], str],
) -> tuple[str, int, str | None]:
    text, whole, plain, adapter = _read_json_text(path, fmt)
    if adapter is None:
        return fmt if fmt != "auto" else "empty", 0, None
    job = BulkJob(
        path, reader.shape_of(text), plain, config, first_no, f"staged_fast_{first_no}", check
    )
    bulk = adapter.stage_bulk(con, job)
    if bulk is not None:
        return adapter.name, bulk.records, bulk.table
    text = text if whole else reader.read_text(path)
    if type(adapter).stage_records is Adapter.stage_records:  # every record through normalize
        units_in = reader.json_units(text)
        return adapter.name, normalize_into(con, adapter, units_in, config, first_no, path), None
    units = list(reader.json_units(text))
    good = [(i, u.raw) for i, u in enumerate(units) if u.reason is None]
    if adapter.stage_records(con, good, job):  # the rest: quarantine rows at their offsets
        bad = [(i, quarantine_row(u.raw, u.reason or "", adapter.name)) for i, u in _failed(units)]
        insert_rows(con, [r for _, r in bad], first_no, str(path), [i for i, _ in bad])
        return adapter.name, len(units), None
    return adapter.name, normalize_into(con, adapter, units, config, first_no, path), None


def _failed(units: list[reader.Unit]) -> Iterable[tuple[int, reader.Unit]]:
    return ((i, u) for i, u in enumerate(units) if u.reason is not None)


def _json_adapter(path: Path, fmt: str) -> Adapter:
    """The adapter a format names, for a JSON file (an error for a table-only format)."""
    adapter = registry.by_format(fmt)
    if adapter is None or JSON not in adapter.reads:
        raise IngestError(
            f"{path}: format {fmt!r} is for CSV / Parquet files, not JSON; "
            "use --format auto or a JSON format"
        )
    return adapter


def _detect(path: Path, text: str, *, final: bool = True) -> Adapter | None:
    """The adapter of the first parseable record that is an event.

    Control messages before it (an SNS capture begins with a subscription confirmation) are
    skipped; a file of control messages only is their adapter's. None when ``text`` is only the
    file's head and its first event is not complete in it (``final`` False); an
    :class:`IngestError` when the record is no known provider's.
    """
    first_control = None
    for unit in reader.json_units(text):
        if unit.reason is not None:
            if not final:
                return None
            continue
        owner = registry.control(unit.value)
        if owner is not None:
            first_control = first_control or owner
            continue
        found = registry.detect(unit.value)
        if found is not None:
            return found
        break
    else:
        if final and first_control is not None:
            return first_control
    if not final:
        return None
    names = ", ".join(a.name for a in registry.adapters() if JSON in a.reads)
    raise IngestError(
        f"{path}: not recognised as any supported ESP export ({names}); the first record's "
        "keys do not match. Pass --format to name it, or map a CSV/Parquet table's columns in "
        "the spec's ingest.columns"
    )


#: Units normalized in Python go to DuckDB in chunks of this many: the parsed records and their
#: rows never sit in Python all at once (1 M events of a per-record adapter took 16 GB of RSS).
CHUNK_UNITS = 20_000


def normalize_into(
    con: duckdb.DuckDBPyConnection,
    adapter: Adapter,
    units: Iterable[reader.Unit],
    config: IngestConfig,
    first_no: int,
    path: Path,
) -> int:
    """Normalize ``units`` into ``staged_rows`` chunk by chunk; the number of rows staged.

    Rows are numbered from ``first_no`` in order, as one :func:`insert_rows` of them all would.
    """
    staged, rows = 0, []
    for i, unit in enumerate(units, start=1):
        rows += normalize_unit(adapter, unit, config)
        if i % CHUNK_UNITS == 0:
            staged += insert_rows(con, rows, first_no + staged, str(path))
            rows = []
    return staged + insert_rows(con, rows, first_no + staged, str(path))


def normalize_unit(adapter: Adapter, unit: reader.Unit, config: IngestConfig) -> list[dict]:
    """A unit's rows: the adapter's expansion of it, each record normalized (or quarantined)."""
    if unit.reason is not None:
        return [quarantine_row(unit.raw, unit.reason, adapter.name)]
    rows = []
    try:
        expanded = list(adapter.expand(unit.value))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return [quarantine_row(unit.raw, f"malformed {adapter.name} page ({exc})", adapter.name)]
    for record, ctx in expanded:
        rows += normalize_record(adapter, record, ctx, config, adapter.name)
    return rows


def normalize_record(
    adapter: Adapter, record: Any, ctx: Context, config: IngestConfig, provider: str
) -> list[dict]:
    """A record's staged rows (with its raw text), or one quarantine row with the reason."""
    raw = _raw_text(record)
    try:
        rows = adapter.normalize(record, ctx, config)
    except RecordError as exc:
        return [quarantine_row(raw, str(exc), provider)]
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        return [
            quarantine_row(
                raw, f"malformed {provider} record ({type(exc).__name__}: {exc})", provider
            )
        ]
    if not rows:
        return [quarantine_row(raw, f"{provider} record without an event", provider)]
    for r in rows:
        r.setdefault("provider", provider)
        r["raw"] = raw
    return rows


def _raw_text(record: Any) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(record)


def quarantine_row(raw: str, reason: str, provider: str) -> dict:
    """A staged row that is only a quarantined record."""
    return {"provider": provider, "raw": raw, "quarantine_reason": reason}


def insert_rows(
    con: duckdb.DuckDBPyConnection,
    rows: list[dict],
    first_no: int,
    source: str,
    offsets: list[int] | None = None,
) -> int:
    """Append staged rows (numbered from ``first_no``, or at ``offsets`` in the file)."""
    if not rows:
        return 0
    columns: dict[str, list] = {c: [] for c in STAGE_FIELDS}
    for r in rows:
        for c in STAGE_FIELDS:
            columns[c].append(r.get(c))
    data = {c: pa.array(v, _ARROW_TYPES.get(c, pa.string())) for c, v in columns.items()}
    offsets = offsets if offsets is not None else list(range(len(rows)))
    data["input_no"] = pa.array([first_no + i for i in offsets], pa.int64())
    data["source"] = pa.array([source] * len(rows), pa.string())
    con.register("py_rows", pa.table(data))
    try:
        con.execute("INSERT INTO staged_rows BY NAME SELECT * FROM py_rows")
    finally:
        con.unregister("py_rows")
    return len(rows)


def _table_adapter(kind: str, fmt: str, header: list[str], config: IngestConfig) -> Adapter:
    """The adapter of a table file (``csv`` or ``parquet``).

    The one the format names if it reads tables of this kind, else (``auto``) the one its
    columns tell, else the generic table adapter.
    """
    named = registry.by_format(fmt)
    if named is not None and kind in named.reads:
        return named
    if fmt == "auto":
        return registry.detect_columns(kind, header, config)
    return registry.generic_table()


def _stage_csv(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, config: IngestConfig, first_no: int
) -> tuple[str, int]:
    text = reader.read_text(path)
    header = [reader.normalise_header(h) for h in reader.csv_header(text)]
    if not header:
        return fmt if fmt != "auto" else "empty", 0
    adapter = _table_adapter(CSV, fmt, header, config)
    ctx = adapter.table_context(path, header, config)
    provider = ctx.lookups.get("provider", adapter.name)
    rows: list[dict] = []
    for unit in reader.csv_units(text):
        if unit.reason:
            rows.append(quarantine_row(unit.raw, unit.reason, provider))
            continue
        unit_rows = normalize_record(adapter, unit.value, ctx, config, provider)
        for r in unit_rows:
            r["raw"] = unit.raw
        rows += unit_rows
    return adapter.table_format(CSV, header), insert_rows(con, rows, first_no, str(path))


def _stage_parquet(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, config: IngestConfig, first_no: int
) -> tuple[str, int]:
    try:
        data = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({exc}); re-export it") from None
    header = [reader.normalise_header(c) for c in data.column_names]
    data = data.rename_columns(header)
    adapter = _table_adapter(PARQUET, fmt, header, config)
    ctx = adapter.table_context(path, header, config)
    provider = ctx.lookups.get("provider", adapter.name)
    rows: list[dict] = []
    for record in data.to_pylist():
        rows += normalize_record(adapter, record, ctx, config, provider)
    return adapter.table_format(PARQUET, header), insert_rows(con, rows, first_no, str(path))
