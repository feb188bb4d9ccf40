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
import functools
import glob
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from loopexp.core import config as settings
from loopexp.core.keys import HashKey
from loopexp.core.sql import sql_escape
from loopexp.events import checks, completeness, output, rawlog, remote, staging
from loopexp.events.adapters import registry
from loopexp.events.config import IngestConfig
from loopexp.events.reader import JSON_SUFFIXES, TABLE_SUFFIXES, IngestError
from loopexp.events.schema import REQUIRED_COLUMNS
from loopexp.events.scope import SendScope, scope_counts
from loopexp.events.summary import FileReport, IngestSummary, write_summary

#: Every value ``--format`` accepts: ``auto`` (each file recognised by its content) and the
#: format names of the registered adapters.
FORMATS: tuple[str, ...] = registry.format_names()

_EXPORT_SUFFIXES = TABLE_SUFFIXES + JSON_SUFFIXES + registry.own_suffixes() + (rawlog.SEALED,)


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
    scope: SendScope | None = None,
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
            [default: $LOOPEXP_DUCKDB_MEMORY_LIMIT, else half the memory available, at most
            800 MiB per DuckDB thread].
        temp_directory: where to spill [default: $LOOPEXP_DUCKDB_TEMP_DIR, else a temporary
            folder removed afterwards].
        scope: the send's campaign ids and assignment time (:mod:`loopexp.events.scope`): the
            summary counts the events outside it (they stay in events.parquet).
    """
    config = config or IngestConfig()
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    items, fetched = remote.localize(items)  # a receivers' bucket: its segments, downloaded
    try:
        return _ingest(
            items, out_dir, key, fmt, config, assignment, memory_limit, temp_directory, scope
        )
    finally:
        if fetched is not None:
            shutil.rmtree(fetched, ignore_errors=True)


def _ingest(
    paths: list[str | Path],
    out_dir: str | Path,
    key: HashKey,
    fmt: str,
    config: IngestConfig,
    assignment: str | Path | None,
    memory_limit: str | None,
    temp_directory: str | Path | None,
    scope: SendScope | None = None,
) -> IngestSummary:
    files = expand_paths(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limit, spill = settings.duckdb_resources(memory_limit, temp_directory)
    own_spill = spill is None
    spill = spill if spill is not None else tempfile.mkdtemp(prefix="loopexp-ingest-")
    con = duckdb.connect()
    raw_dir: Path | None = None
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")  # less memory; order is not kept
        # Bounded memory: past the limit DuckDB spills to disk instead of growing without end.
        try:
            con.execute(f"SET memory_limit = '{sql_escape(limit)}'")
        except duckdb.Error:
            raise IngestError(
                f"memory limit {limit!r} is not a size DuckDB understands; write it like '2GB' "
                f"or '512MiB' (spec data.memory_limit or ${settings.DUCKDB_MEMORY_LIMIT})"
            ) from None
        con.execute(f"SET temp_directory = '{sql_escape(spill)}'")
        with contextlib.suppress(duckdb.Error):
            con.execute("SET enable_progress_bar = false")
        staging.create_staged_rows(con)
        salt = checks.id_salt(key)
        check = functools.partial(checks.checked_sql, salt=salt)
        started = time.perf_counter()
        raw_dir = Path(tempfile.mkdtemp(prefix="loopexp-rawlog-", dir=spill or None))
        reports, parts = _stage_files(con, files, fmt, config, check, raw_dir)
        checks.create_checked(con, salt, parts)
        read_done = time.perf_counter()
        n_addresses = output.hash_address_keys(con, key)
        hash_done = time.perf_counter()
        summary = output.finish(con, out, config, key, reports, assignment)
        summary.distinct_addresses = n_addresses
        if scope is not None:  # issue 28: how many events are not this send's
            relation = f"read_parquet('{sql_escape(summary.events_path)}')"
            summary.outside_scope = scope_counts(con, relation, scope)
        summary.timings_s = {
            "read": round(read_done - started, 3),
            "hash": round(hash_done - read_done, 3),
            "finish": round(time.perf_counter() - hash_done, 3),
        }
        _raw_log_completeness(files, summary, out)
        _write_and_check(summary, assignment, out)
        return summary
    finally:
        con.close()
        if raw_dir is not None:
            shutil.rmtree(raw_dir, ignore_errors=True)
        if own_spill:
            shutil.rmtree(spill, ignore_errors=True)


def _raw_log_completeness(files: list[Path], summary: IngestSummary, out: Path) -> None:
    """``completeness.json`` when the inputs include the webhook receiver's raw log."""
    report = completeness.completeness(files, summary.events_path)
    stale = out / completeness.FILE
    if report is None:
        stale.unlink(missing_ok=True)
        return
    completeness.write(report, out)
    summary.warnings += completeness.summary_lines(report)


def _stage_files(
    con: duckdb.DuckDBPyConnection,
    files: list[Path],
    fmt: str,
    config: IngestConfig,
    check: functools.partial,
    raw_dir: Path,
) -> tuple[list[FileReport], list[tuple[str, int, str]]]:
    """Stage every file; the reports and the tables staged in bulk (first number, source)."""
    reports = []
    parts: list[tuple[str, int, str]] = []
    next_no = 1
    # The webhook receiver's sealed segments: per provider, read as that provider's export.
    files, forced, origin = rawlog.explode(files, raw_dir)
    for path in files:
        file_fmt = forced.get(path, fmt)
        file_format, n, table_name = staging.stage_file(con, path, file_fmt, config, next_no, check)
        reports.append(FileReport(origin.get(path, str(path)), file_format, n))
        if table_name:
            parts.append((table_name, next_no, str(path)))
        next_no += n
    return reports, parts


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
                and f.name.lower().endswith(_EXPORT_SUFFIXES)
            )
            if not inside:
                raise IngestError(
                    f"{p}: folder holds no export file "
                    "(.json, .ndjson, .jsonl, .csv, .parquet, .avro, or a webhook log's .wlog)"
                )
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            found_by_glob = glob.glob(str(p), recursive=True)  # ** spans partition folders
            matches = sorted(Path(m) for m in found_by_glob if Path(m).is_file())
            if not matches:
                raise IngestError(f"{p}: no such file; check the path (globs are allowed)")
            found += matches
    return list(dict.fromkeys(found))


def canonical_columns_ok(path: str | Path) -> bool:
    """True when ``path`` is a Parquet file with the canonical required columns."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        return False
    return set(REQUIRED_COLUMNS) <= set(names)


def _write_and_check(summary: IngestSummary, assignment: str | Path | None, out: Path) -> None:
    """Write the summary; then no event on the assignment is an error (wrong key or list)."""
    write_summary(summary, out)
    if summary.assignment_match_share == 0 and summary.events:
        raise IngestError(
            f"none of the {summary.events:,} events is of a recipient on the assignment "
            f"{assignment}: the exports were hashed with another key than the assignment "
            "(check $LOOPEXP_HASH_KEY or --key-file), or they are of another list or "
            f"mailing. The events and ingest_summary.json were written to {out} to inspect."
        )
