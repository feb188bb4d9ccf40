"""Reading the engine's inputs into DuckDB: sources checked file by file, and a bounded connection.

An input is a Parquet or CSV path (globs allowed; files may differ in their columns) or a DataFrame.
Each file is checked on its own before it is read (empty, truncated, mislabelled, missing columns),
so that an error names the file and says what to do; DuckDB runs within a memory limit and spills
to a temporary folder (:func:`loopexp.core.config.duckdb_resources`).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import pandas as pd

from loopexp.core import config
from loopexp.core.errors import EventsError
from loopexp.core.keys import redact_addresses
from loopexp.core.sql import sql_string

#: An engine input: a Parquet/CSV path or glob, or a DataFrame.
Source = str | Path | pd.DataFrame


def first_line(exc: BaseException) -> str:
    """The gist of a DuckDB error: its first lines, without quoted data and without addresses.

    DuckDB quotes the offending row ("Original Line: ...") and its option dump: neither belongs
    in a log or a notebook, where an e-mail address in them would leak.
    """
    kept = []
    for line in str(exc).strip().splitlines():
        if line.startswith(("Possible", "  file =", "*")) or len(kept) == 3:
            break
        if line.strip() and not line.startswith("Original Line"):
            kept.append(line.strip())
    return redact_addresses(" ".join(kept)) if kept else type(exc).__name__


def source_name(source: Source) -> str:
    """How an error message names a source: its path, or ``DataFrame``."""
    return "DataFrame" if isinstance(source, pd.DataFrame) else str(source)


# --- resources ---------------------------------------------------------------------------------


@contextmanager
def connect(
    memory_limit: str | None, temp_directory: str | Path | None
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """A DuckDB connection in UTC within the memory limit, spilling to a temporary folder.

    Yields the connection and the memory limit in force; the folder (when ours) is removed after.
    """
    limit, spill = config.duckdb_resources(memory_limit, temp_directory)
    own = spill is None
    if own:
        spill = tempfile.mkdtemp(prefix="loopexp-duckdb-")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # naive timestamps are UTC, as providers send them
        try:
            con.execute(f"SET memory_limit = {sql_string(limit)}")
        except duckdb.Error:
            raise EventsError(
                f"memory limit {limit!r} is not a size DuckDB understands; write it like "
                f"'2GB' or '512MiB' (spec data.memory_limit or ${config.DUCKDB_MEMORY_LIMIT})"
            ) from None
        con.execute(f"SET temp_directory = {sql_string(spill)}")
        threads = config.duckdb_threads()
        if threads:
            con.execute(f"SET threads = {threads}")
        con.execute("SET preserve_insertion_order = false")  # less memory; results are ordered
        # No progress bar in cron logs. (In a Jupyter kernel without ipywidgets DuckDB refuses to
        # touch the setting at all; there it prints no bar anyway.)
        with suppress(duckdb.Error):
            con.execute("SET enable_progress_bar = false")
        yield con, limit
    finally:
        con.close()
        if own:
            shutil.rmtree(spill, ignore_errors=True)


# --- inputs ------------------------------------------------------------------------------------

ASSIGNMENT_COLUMNS: tuple[str, ...] = ("recipient_key", "segment", "variant_id")


def require_source(source: Source, what: str) -> None:
    """Raise :class:`EventsError` when a path (or glob) ``source`` matches no usable file.

    Cheap checks only (existence, size, Parquet magic bytes), so that a pipeline can call it
    before it starts a notebook kernel; the columns are checked when the data is read.
    """
    if isinstance(source, pd.DataFrame):
        return
    files = sorted(glob.glob(str(source)))
    if not files:
        raise EventsError(
            f"{source}: file not found; no file matches this path (expected Parquet or CSV "
            f"for the {what})"
        )
    for path in files:
        _check_file(path, _reader(path))


def _reader(path: str) -> str:
    return "csv" if path.lower().endswith((".csv", ".csv.gz", ".tsv", ".txt")) else "parquet"


def _read_sql(files: list[str], reader: str) -> str:
    paths = "[" + ", ".join(sql_string(f) for f in files) + "]"
    if reader == "csv":
        # Every column as text: the engine parses types itself (keys keep leading zeros).
        return f"read_csv({paths}, union_by_name = true, all_varchar = true)"
    return f"read_parquet({paths}, union_by_name = true)"


def _content_kind(head: bytes) -> str:
    text = head.lstrip()
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed"
    if text[:1] in (b"{", b"["):
        return "it looks like JSON"
    if head.startswith(b"PK"):
        return "it looks like a ZIP or Excel file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "its content is not recognisable"
    return "it looks like text (CSV?)"


def _check_file(path: str, reader: str) -> None:
    """Catch what DuckDB reports poorly: an empty, truncated or mislabelled file."""
    size = os.path.getsize(path)
    if size == 0:
        raise EventsError(
            f"{path}: the file is empty (0 bytes): the export or copy did not finish. "
            "Export or copy it again."
        )
    if reader != "parquet":
        return
    with open(path, "rb") as handle:
        head = handle.read(64)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if not head.startswith(_PARQUET_MAGIC):
        raise EventsError(
            f"{path}: not a Parquet file ({_content_kind(head)}). Give the events as Parquet in "
            "the canonical schema (`loopexp ingest` converts ESP exports), or name a CSV file "
            "*.csv."
        )
    if tail != _PARQUET_MAGIC or size < 12:
        raise EventsError(
            f"{path}: truncated Parquet file ({size:,} bytes, the footer is missing): the export "
            "or copy was cut short. Copy or export it again."
        )


_PARQUET_MAGIC = b"PAR1"


def attach(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: Source,
    what: str,
    required: Sequence[str],
) -> None:
    """Define view ``name`` over ``source``, checking each file on its own first.

    A glob's files are read by column name (``union_by_name``): a column one file lacks is NULL
    for its rows, never shifted or dropped; each file must have the ``required`` columns.
    """
    require_source(source, what)
    if isinstance(source, pd.DataFrame):
        con.register(name, source)
        check_columns(con, name, required, source)
        return
    files = sorted(glob.glob(str(source)))
    readers = {_reader(f) for f in files}
    if len(readers) > 1:
        raise EventsError(
            f"{source}: matches both CSV and Parquet files; give one kind per {what} source"
        )
    (reader,) = readers
    file_columns: dict[str, dict[str, str]] = {}
    for path in files:
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {_read_sql([path], reader)}")
            file_columns[path] = {column: kind for column, kind, *_ in described.fetchall()}
            columns = list(file_columns[path])
        except duckdb.Error as exc:
            advice = (
                "DuckDB could not work out its layout: save it as UTF-8, comma-separated, with a "
                "header row, or convert it to Parquet"
                if reader == "csv"
                else "the file is damaged: export or copy it again"
            )
            raise EventsError(
                f"{path}: cannot be read as {reader.upper()} ({redact_addresses(first_line(exc))})"
                f"; {advice}."
            ) from None
        missing = [c for c in required if c not in columns]
        if missing:
            raise EventsError(
                f"{path}: missing required column(s) {missing}; has {columns}. Rename or derive "
                f"the columns of the canonical {what} table"
                + (
                    " (loopexp.events.EVENT_SCHEMA: event_id, provider, event_type, ts, "
                    "recipient_key, ...)."
                    if what == "events"
                    else f" ({', '.join(ASSIGNMENT_COLUMNS)})."
                )
            )
    types_seen: dict[str, set[str]] = {}
    for columns in file_columns.values():
        for column, kind in columns.items():
            types_seen.setdefault(column, set()).add(kind)
    conflicts = sorted(c for c, kinds in types_seen.items() if len(kinds) > 1)
    if not conflicts:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {_read_sql(files, reader)}")
        return
    # A column typed differently across files (ts a timestamp here, epoch ms there): read it as
    # text from every file and let the validation parse each value. Only in this rare case is
    # the glob read file by file.
    parts = []
    for path in files:
        present = [c for c in file_columns[path] if c in conflicts]
        replace = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in present)
        parts.append(
            f"SELECT * {f'REPLACE ({replace})' if replace else ''} FROM {_read_sql([path], reader)}"
        )
    con.execute(f"CREATE VIEW {name} AS {' UNION ALL BY NAME '.join(parts)}")


def columns_of(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    """The columns of relation ``name``."""
    return [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]


def column_types(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, str]:
    """The columns of relation ``name`` and their DuckDB types (upper case)."""
    return {r[0]: r[1].upper() for r in con.execute(f"DESCRIBE {name}").fetchall()}


def check_columns(
    con: duckdb.DuckDBPyConnection, name: str, required: Sequence[str], source: Source
) -> None:
    """Raise :class:`EventsError` naming ``source`` when relation ``name`` lacks a column."""
    missing = [c for c in required if c not in columns_of(con, name)]
    if missing:
        raise EventsError(
            f"{source_name(source)}: missing required column(s) {missing}; "
            f"has {columns_of(con, name)}. "
            "Rename or derive the columns of the canonical table (loopexp.events.EVENT_SCHEMA: "
            "event_id, provider, event_type, ts, recipient_key, ...)."
        )
