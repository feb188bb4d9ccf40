"""Compute metrics where the data lives (DuckDB) and bring back only sufficient statistics.

For every metric, variant and segment the engine returns ``n`` (denominator count), ``sum`` and
``sum_sq`` of the per-recipient numerator: enough for every test in :mod:`loopexp.stats`, a few
hundred numbers whatever the size of the event table. Malformed events are quarantined with a reason
(and optionally written to a Parquet file), never silently dropped.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from loopexp.core import config
from loopexp.core.errors import EventsError
from loopexp.core.keys import EMAIL_PATTERN, redact_addresses
from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS
from loopexp.metrics.compile import (
    DUCKDB,
    MetricsError,
    Plan,
    StatColumn,
    cap_quantiles_sql,
    events_stats_sql,
    links_sql,
    make_plan,
    with_cap,
)
from loopexp.metrics.definitions import MetricDef, resolve_metric

ALL_SEGMENTS = "all"

Source = str | Path | pd.DataFrame


class QuarantineError(EventsError):
    """More events were quarantined than the spec allows: no decision on what is left."""


@dataclass(frozen=True)
class CovariateSums:
    """Sums of one pre-period covariate ``x`` over a metric's population (regression adjustment).

    Attributes:
        sum: sum of x.
        sum_sq: sum of x².
        cross: sum of x · numerator.
        cross_den: sum of x · ratio denominator (ratio metrics only).
        with_covariates: sum of x · z for each covariate z listed after x in the metric's
            covariates (with ``sum_sq``, the Σxxᵀ of multi-covariate regression adjustment).
    """

    sum: float
    sum_sq: float
    cross: float
    cross_den: float | None = None
    with_covariates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupStats:
    """Sufficient statistics of one metric in one variant (and segment).

    Attributes:
        metric: metric name.
        variant_id: the variant (or ``holdout``).
        segment: lifecycle segment, or ``"all"`` for the whole audience.
        n: recipients in the metric's denominator population.
        sum: sum of the per-recipient numerator (successes, for a proportion).
        sum_sq: sum of squares of the numerator (equals ``sum`` for a proportion).
        den_sum: ratio metrics: sum of the per-recipient ratio denominator (else None).
        den_sum_sq: ratio metrics: its sum of squares.
        cross_sum: ratio metrics: sum of numerator · denominator (the delta method's covariance).
        covariates: per covariate name, its sums and cross sums with the numerator.
    """

    metric: str
    variant_id: str
    segment: str
    n: int
    sum: float
    sum_sq: float
    den_sum: float | None = None
    den_sum_sq: float | None = None
    cross_sum: float | None = None
    covariates: dict[str, CovariateSums] = field(default_factory=dict, compare=False)

    @property
    def mean(self) -> float:
        """Numerator sum over the population count (NaN when ``n`` is 0)."""
        return self.sum / self.n if self.n else float("nan")

    @property
    def value(self) -> float:
        """The metric's value: the mean, or for a ratio metric numerator sum / denominator sum."""
        if self.den_sum is None:
            return self.mean
        return self.sum / self.den_sum if self.den_sum else float("nan")


@dataclass
class MetricTable:
    """What the engine returns: sufficient statistics plus the counts an analysis must report."""

    stats: list[GroupStats]
    assigned: dict[str, int]
    """Recipients per group on the assignment (holdout included): the SRM input."""
    events: int
    quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    unassigned_events: int = 0
    """Valid events whose recipient is not on the assignment (other campaigns, seeds, typos)."""
    matched_recipients: int = 0
    """Assigned recipients with at least one valid event."""
    caps: dict[str, float] = field(default_factory=dict)
    """Per capped metric, the value its per-recipient numerator was winsorised at."""
    links: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    """Per-link human clicks per variant (``compute_metrics(..., links=True)``), else None."""

    def get(self, metric: str, variant_id: str, segment: str = ALL_SEGMENTS) -> GroupStats:
        """The statistics of one metric in one variant and segment."""
        for s in self.stats:
            if (s.metric, s.variant_id, s.segment) == (metric, variant_id, segment):
                return s
        raise KeyError(f"no statistics for metric={metric} variant={variant_id} segment={segment}")

    @property
    def segments(self) -> list[str]:
        """Segments present, without the ``all`` roll-up."""
        return sorted({s.segment for s in self.stats} - {ALL_SEGMENTS})

    def to_frame(self) -> pd.DataFrame:
        """One row per (segment, variant, metric) with n, sum, sum_sq, value (and ratio sums)."""
        columns = ["metric", "variant_id", "segment", "n", "sum", "sum_sq"]
        ratio = ["den_sum", "den_sum_sq", "cross_sum"]
        has_ratio = any(s.den_sum is not None for s in self.stats)
        keep = columns + ratio if has_ratio else columns
        frame = pd.DataFrame([{k: getattr(s, k) for k in keep} for s in self.stats], columns=keep)
        frame["value"] = [s.value for s in self.stats]
        return frame


def compute_metrics(
    events: Source,
    assignment: Source,
    metrics: Sequence[str | MetricDef],
    quarantine_path: str | Path | None = None,
    *,
    segments: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    max_quarantine_share: float | None = None,
    require_match: bool = False,
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
    caps: Mapping[str, float] | None = None,
    links: bool = False,
) -> MetricTable:
    """Compute ``metrics`` per variant and segment from canonical events and an assignment.

    ``events`` is a Parquet or CSV path (globs allowed; files may differ in their columns) or a
    DataFrame in the canonical schema; ``assignment`` a Parquet/CSV path or DataFrame with
    ``recipient_key, segment, variant_id`` (and any covariate columns the metrics name).
    ``metrics`` are names from the standard library (:data:`loopexp.metrics.LIBRARY`) or
    :class:`MetricDef` objects (a spec's own). Every input is checked before it is used (see
    ``tests/HARDENING.md``): a bad file or assignment raises :class:`EventsError` saying which
    file, what is wrong and what to do; a malformed event is quarantined with a reason.

    The checks of a run (:func:`loopexp.analysis.analyze.analyze_files` passes them from the spec):
    ``segments`` / ``variants`` the assignment may hold; ``max_quarantine_share`` above which the
    run stops (:class:`QuarantineError`) instead of deciding on what is left; ``require_match``
    refuses events none of whose recipients is on the assignment. ``memory_limit`` and
    ``temp_directory`` bound DuckDB (see :func:`loopexp.core.config.duckdb_resources`).

    ``caps`` maps mean metrics to a percentile (e.g. 0.99): their per-recipient numerator is
    winsorised at that percentile of its non-zero values among mailed recipients in the metric's
    denominator, pooled over arms (one cap for all arms, so the comparison stays fair).

    ``links`` also returns the per-link click table (:func:`loopexp.metrics.links.link_clicks`)
    from the same validated events, without validating them a second time.
    """
    defs = [m if isinstance(m, MetricDef) else resolve_metric(m) for m in metrics]
    with _connect(memory_limit, temp_directory) as (con, limit):
        try:
            return _compute(
                con,
                events,
                assignment,
                defs,
                quarantine_path,
                segments=segments,
                variants=variants,
                max_quarantine_share=max_quarantine_share,
                require_match=require_match,
                caps=caps,
                links=links,
            )
        except duckdb.OutOfMemoryException as exc:
            raise EventsError(
                f"DuckDB ran out of memory (limit {limit}) computing metrics from "
                f"{_where(events)}: {redact_addresses(_first_line(exc))}. Give it more memory "
                f"(spec data.memory_limit or ${config.DUCKDB_MEMORY_LIMIT}) or a folder with free "
                f"disk space to spill to (data.temp_directory or ${config.DUCKDB_TEMP_DIR})."
            ) from None
        except duckdb.Error as exc:
            raise EventsError(
                f"{_where(events)} (events) with {_where(assignment)} (assignment): DuckDB could "
                f"not process the inputs: {redact_addresses(_first_line(exc))}. A file may be "
                "corrupt or not in the canonical schema: export it again, or convert it with "
                "`loopexp ingest`."
            ) from None


def _compute(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    assignment: Source,
    defs: Sequence,
    quarantine_path: str | Path | None,
    *,
    segments: Sequence[str] | None,
    variants: Sequence[str] | None,
    max_quarantine_share: float | None,
    require_match: bool,
    caps: Mapping[str, float] | None = None,
    links: bool = False,
) -> MetricTable:
    _attach(con, "raw_events", events, "events", REQUIRED_COLUMNS)
    plan = make_plan(defs)
    _attach(con, "assignment_raw", assignment, "assignment", ASSIGNMENT_COLUMNS)
    _check_columns(con, "assignment_raw", plan.covariates, assignment)  # the metrics' covariates
    con.execute(
        "CREATE VIEW assignment_src AS SELECT "
        + ", ".join(f"TRY_CAST({c} AS VARCHAR) AS {c}" for c in ASSIGNMENT_COLUMNS)
        + "".join(f", {DUCKDB.quote(c)}" for c in plan.covariates if c not in ASSIGNMENT_COLUMNS)
        + " FROM assignment_raw"
    )
    _check_assignment(con, assignment, segments, variants)
    has_candidates = validate_events(con)
    counts = dict(
        con.execute("SELECT quarantine_reason, n FROM event_summary WHERE by_reason").fetchall()
    )
    n_events = sum(counts.values())
    duplicates = 0
    if has_candidates:  # exact: the candidates (counted per hash) less the one kept per key
        (duplicates,) = con.execute(
            "SELECT (SELECT sum(n) FROM event_summary WHERE NOT by_reason) "
            "- (SELECT count(*) FROM dup_kept)"
        ).fetchone()
    reasons = {k: v for k, v in counts.items() if k is not None}
    if duplicates:
        reasons[DUPLICATE] = duplicates
    reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    if quarantine_path is not None and reasons:
        con.execute(
            f"COPY ({_quarantine_select(con)}) TO '{_sql_path(quarantine_path)}' (FORMAT parquet)"
        )
    quarantined = sum(reasons.values())
    limit = max_quarantine_share
    if limit is not None and n_events and quarantined > limit * n_events:
        raise QuarantineError(
            _quarantine_message(events, n_events, reasons, max_quarantine_share, quarantine_path)
        )
    # Capped mean metrics: the cap is a percentile of the per-recipient values (a first query),
    # then applied through Measure.cap / least() in the one query from events to the statistics.
    cap_values = _cap_values(con, plan, caps or {})
    if cap_values:
        plan = make_plan(
            [with_cap(d, cap_values[d.name]) if d.name in cap_values else d for d in defs]
        )
    # One query from valid events to the statistics (and the unassigned / matched counts).
    query, columns = events_stats_sql(plan, DUCKDB)
    cursor = con.execute(query.sql, query.params)
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    matched = sum(int(r["matched"] or 0) for r in rows if int(r["all_segments"]))
    if require_match and not matched:
        raise EventsError(_no_match_message(con, events, assignment, n_events, quarantined))
    stats, assigned = collect_stats(rows, columns)
    link_table = None
    if links:
        from loopexp.metrics.links import order_links  # noqa: PLC0415 (links imports this module)

        link_query = links_sql(DUCKDB)
        link_table = order_links(con.execute(link_query.sql, link_query.params).df())
    return MetricTable(
        stats=stats,
        assigned=assigned,
        events=int(n_events),
        quarantined=quarantined,
        quarantine_reasons=reasons,
        unassigned_events=unassigned_events(rows),
        matched_recipients=matched,
        caps=cap_values,
        links=link_table,
    )


def _sql_path(path: str | Path) -> str:
    return str(path).replace("'", "''")


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
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


def _where(source: Source) -> str:
    return "DataFrame" if isinstance(source, pd.DataFrame) else str(source)


# --- resources ---------------------------------------------------------------------------------


@contextmanager
def _connect(
    memory_limit: str | None, temp_directory: str | Path | None
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    limit, spill = config.duckdb_resources(memory_limit, temp_directory)
    own = spill is None
    if own:
        spill = tempfile.mkdtemp(prefix="loopexp-duckdb-")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # naive timestamps are UTC, as providers send them
        try:
            con.execute(f"SET memory_limit = {_sql_str(limit)}")
        except duckdb.Error:
            raise EventsError(
                f"memory limit {limit!r} is not a size DuckDB understands; write it like "
                f"'2GB' or '512MiB' (spec data.memory_limit or ${config.DUCKDB_MEMORY_LIMIT})"
            ) from None
        con.execute(f"SET temp_directory = {_sql_str(spill)}")
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
    paths = "[" + ", ".join(_sql_str(f) for f in files) + "]"
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


def _attach(
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
        _check_columns(con, name, required, source)
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
                f"{path}: cannot be read as {reader.upper()} ({redact_addresses(_first_line(exc))})"
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


def _columns(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]


def _column_types(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, str]:
    return {r[0]: r[1].upper() for r in con.execute(f"DESCRIBE {name}").fetchall()}


def _check_columns(
    con: duckdb.DuckDBPyConnection, name: str, required: Sequence[str], source: Source
) -> None:
    missing = [c for c in required if c not in _columns(con, name)]
    if missing:
        raise EventsError(
            f"{_where(source)}: missing required column(s) {missing}; has {_columns(con, name)}. "
            "Rename or derive the columns of the canonical table (loopexp.events.EVENT_SCHEMA: "
            "event_id, provider, event_type, ts, recipient_key, ...)."
        )


def _show_key(key: str | None) -> str:
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


def _address_sql(column: str) -> str:
    pattern = _sql_str(EMAIL_PATTERN.pattern)
    return f"(contains({column}, '@') AND regexp_matches({column}, {pattern}))"


def _blank_sql(column: str) -> str:
    """NULL, empty, or only what trim() removes (spaces, also Unicode ones).

    trim() copies every string: at 10 M keys the plain ``trim(x) = ''`` took 1.5 s alone, so it
    runs only on values starting with a space or a non-ASCII character.
    """
    return (
        f"({column} IS NULL OR {column} = '' "
        f"OR ((ascii({column}) = 32 OR ascii({column}) > 127) AND trim({column}) = ''))"
    )


def _check_assignment(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    segments: Sequence[str] | None,
    variants: Sequence[str] | None,
) -> None:
    """Refuse an assignment that would count a recipient twice, or hold groups the spec lacks.

    One aggregate over the assignment answers every check in the common (valid) case: blank
    fields, addresses, whether any key repeats (its 8-byte hash counted distinct: a collision can
    only suggest a repeat, which the exact query then verifies) and the segments and groups
    present. The details of an error are queried only when there is one.
    """
    where = _where(source)
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
        f"count(*) FILTER (WHERE {_address_sql('recipient_key')}), "
        f"count(*), count(DISTINCT {_ASSIGNMENT_KEY_HASH}), "
        "list(DISTINCT segment), list(DISTINCT variant_id) FROM assignment_src"
    ).fetchone()
    if null_key or null_segment or null_variant:
        parts = [
            f"{n:,} row(s) without a {col}"
            for n, col in (
                (null_key, "recipient_key"),
                (null_segment, "segment"),
                (null_variant, "variant_id"),
            )
            if n
        ]
        raise EventsError(
            f"{where}: assignment has {', '.join(parts)}. Every assigned recipient needs a key, a "
            "segment and a group: make the assignment again with `loopexp assign`."
        )
    if addresses:
        raise EventsError(
            f"{where}: {addresses:,} recipient_key(s) of the assignment are e-mail addresses, not "
            "hashed keys. Make the assignment with `loopexp assign`, which hashes addresses "
            "(loopexp.core.keys), so that no address reaches the analysis or its outputs."
        )
    twice = "SELECT recipient_key FROM assignment_src GROUP BY 1 HAVING count(*) > 1"
    dup_keys = extra_rows = 0
    if n_hashes < n_rows:  # a repeated key, or a hash collision: count exactly
        dup_keys, extra_rows = con.execute(
            "SELECT count(*), coalesce(sum(n - 1), 0) FROM "
            "(SELECT count(*) AS n FROM assignment_src GROUP BY recipient_key HAVING count(*) > 1)"
        ).fetchone()
    if dup_keys:
        (cross,) = con.execute(
            "SELECT count(*) FROM (SELECT recipient_key FROM assignment_src "
            f"WHERE recipient_key IN ({twice}) GROUP BY 1 HAVING count(DISTINCT variant_id) > 1)"
        ).fetchone()
        examples = [
            _show_key(k)
            for (k,) in con.execute(f"SELECT * FROM ({twice}) ORDER BY 1 LIMIT 3").fetchall()
        ]
        raise EventsError(
            f"{where}: {dup_keys:,} recipient_key(s) appear more than once in the assignment "
            f"({extra_rows:,} extra row(s); {cross:,} of them in more than one group), e.g. "
            f"{', '.join(examples)}. A recipient would be counted twice and the sample-ratio "
            "check would not notice: remove the duplicates or make the assignment again with "
            "`loopexp assign`."
        )
    for column, allowed, seen, noun in (
        ("segment", segments, segments_seen, "audience segments"),
        ("variant_id", variants, variants_seen, "groups (variants and holdout)"),
    ):
        if allowed is None or set(seen) <= set(allowed):
            continue
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

_REASON_HINTS = {
    "missing or unparseable ts": (
        "timestamps must be ISO 8601 (with an offset or UTC), RFC 2822, or Unix epoch seconds / "
        "milliseconds / microseconds"
    ),
    "ts out of range (before 2000 or after 2099)": (
        "the timestamps parse but are implausible: epoch values in the wrong unit?"
    ),
    "recipient_key is an e-mail address, not a hashed key": (
        "hash addresses on the way in (`loopexp ingest`, loopexp.core.keys)"
    ),
    "unknown event_type": f"event_type must be one of {', '.join(EVENT_TYPES)}",
}


def _quarantine_message(
    events: Source,
    n_events: int,
    reasons: dict[str, int],
    max_share: float,
    quarantine_path: str | Path | None,
) -> str:
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
        f"{_where(events)}: {quarantined:,} of {n_events:,} events "
        f"({quarantined / n_events:.0%}) were quarantined, more than the spec's "
        f"data.max_quarantine_share of {max_share:.0%}, so no decision is made on what is left. "
        f"Reasons: {listed}. {where} Fix the export (or its adapter), or raise "
        "data.max_quarantine_share if this share is expected."
    )


def _no_match_message(
    con: duckdb.DuckDBPyConnection,
    events: Source,
    assignment: Source,
    n_events: int,
    quarantined: int,
) -> str:
    if n_events - quarantined <= 0:
        return (
            f"{_where(events)}: no usable event ({n_events:,} events, {quarantined:,} "
            "quarantined): there is nothing to analyse. Check that the export is complete."
        )
    event_keys = [
        _show_key(k)
        for (k,) in con.execute(
            "SELECT DISTINCT recipient_key FROM valid_events ORDER BY recipient_key LIMIT 3"
        ).fetchall()
    ]
    assigned_keys = [
        _show_key(k)
        for (k,) in con.execute(
            "SELECT recipient_key FROM assignment_src ORDER BY recipient_key LIMIT 3"
        ).fetchall()
    ]
    return (
        f"no event of {_where(events)} belongs to a recipient of the assignment "
        f"{_where(assignment)}: the comparison cannot be made. Keys in the events look like "
        f"{', '.join(event_keys)}; keys in the assignment like {', '.join(assigned_keys)}. Are "
        "they from the same campaign, and hashed with the same key ($LOOPEXP_HASH_KEY)?"
    )


_DUCK_TYPES = {
    "string": "VARCHAR",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
    "bool": "BOOLEAN",
    "double": "DOUBLE",
}

_NUMERIC = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE",
}  # fmt: skip
#: Columns parsed from what providers send; their raw text is kept in the quarantine file.
PARSED_COLUMNS: tuple[str, ...] = ("ts", "is_machine_open", "is_bot_click", "revenue")
#: Timestamp layouts a cast to TIMESTAMPTZ does not read (ISO 8601 it does, any offset).
_TS_FORMATS = (
    "%a, %d %b %Y %H:%M:%S %z",  # RFC 2822 (SMTP Date, some webhook payloads)
    "%d %b %Y %H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S %z",  # ISO with a space before the offset
    "%Y-%m-%d %H:%M:%S.%f %z",
)
_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")
_UNKNOWN = ("", "null", "none", "nan", "unknown", "n/a")


def _is_numeric(col_type: str) -> bool:
    return col_type in _NUMERIC or col_type.startswith("DECIMAL")


def _epoch_sql(x: str) -> str:
    """Unix epoch in seconds, ms, µs or ns, told apart by magnitude (as pandas and Spark users do).

    Seconds below 1e11 reach the year 5138, milliseconds from 1e11 start in 1973: a plausible
    event time has exactly one reading. The out-of-range check catches the rest.
    """
    return f"""CASE
        WHEN NOT isfinite({x}) THEN NULL
        WHEN abs({x}) < 1e11 THEN make_timestamp(round({x} * 1e6)::BIGINT)::TIMESTAMPTZ
        WHEN abs({x}) < 1e14 THEN make_timestamp(round({x} * 1e3)::BIGINT)::TIMESTAMPTZ
        WHEN abs({x}) < 1e17 THEN make_timestamp(round({x})::BIGINT)::TIMESTAMPTZ
        WHEN abs({x}) < 1e20 THEN make_timestamp(round({x} / 1e3)::BIGINT)::TIMESTAMPTZ
    END"""


def _ts_sql(col_type: str | None) -> str:
    if col_type is None:
        return "NULL::TIMESTAMPTZ"
    if col_type == "TIMESTAMP WITH TIME ZONE":
        return "ts"
    if col_type.startswith("TIMESTAMP") or col_type == "DATE":
        return "ts::TIMESTAMPTZ"  # naive: UTC (the session's time zone)
    if _is_numeric(col_type):
        return _epoch_sql("ts::DOUBLE")
    if col_type == "VARCHAR":
        formats = "[" + ", ".join(_sql_str(f) for f in _TS_FORMATS) + "]"
        return f"""CASE
            WHEN regexp_full_match(trim(ts), '[+-]?[0-9]+(\\.[0-9]*)?')
                THEN {_epoch_sql("TRY_CAST(trim(ts) AS DOUBLE)")}
            ELSE coalesce(TRY_CAST(ts AS TIMESTAMPTZ), try_strptime(trim(ts), {formats}))
        END"""
    return "NULL::TIMESTAMPTZ"


def _flag_sql(column: str, col_type: str | None) -> tuple[str, str]:
    """(parsed BOOLEAN, unparseable condition) of a three-valued flag column."""
    if col_type is None:
        return "NULL::BOOLEAN", "false"
    if col_type == "BOOLEAN":
        return column, "false"
    if col_type == "VARCHAR":
        v = f"lower(trim({column}))"
        in_ = lambda words: f"{v} IN ({', '.join(map(_sql_str, words))})"  # noqa: E731
        parsed = f"CASE WHEN {in_(_TRUE)} THEN true WHEN {in_(_FALSE)} THEN false END"
        return parsed, f"({column} IS NOT NULL AND NOT {in_(_UNKNOWN)} AND ({parsed}) IS NULL)"
    if _is_numeric(col_type):
        parsed = f"CASE WHEN {column} = 1 THEN true WHEN {column} = 0 THEN false END"
        known = f"{column} IS NOT NULL AND NOT isnan({column}::DOUBLE)"
        return parsed, f"({known} AND ({parsed}) IS NULL)"
    return "NULL::BOOLEAN", f"({column} IS NOT NULL)"


def _revenue_sql(col_type: str | None) -> tuple[str, str]:
    """(parsed DOUBLE, unparseable-or-non-finite condition) of the revenue column."""
    if col_type is None:
        return "NULL::DOUBLE", "false"
    if col_type == "VARCHAR":
        parsed = "TRY_CAST(trim(revenue) AS DOUBLE)"
        return parsed, (
            f"((revenue IS NOT NULL AND trim(revenue) <> '' AND {parsed} IS NULL) "
            f"OR NOT isfinite({parsed}))"
        )
    if _is_numeric(col_type):
        return "revenue::DOUBLE", "NOT isfinite(revenue::DOUBLE)"
    return "NULL::DOUBLE", "(revenue IS NOT NULL)"


DUPLICATE = "duplicate (provider, event_id)"
#: The duplicate check's hash of an event's key (DuckDB's 64-bit hash of both columns).
_KEY_HASH = "hash(coalesce(provider, ''), event_id)"
#: The assignment check's hash of a recipient key (distinct hashes < rows: verify exactly).
_ASSIGNMENT_KEY_HASH = "hash(recipient_key)"
_TS_MIN, _TS_MAX = "2000-01-01", "2100-01-01"


def validate_events(con: duckdb.DuckDBPyConnection) -> bool:
    """Define ``checked_events``, ``valid_events`` and ``quarantined_events`` over ``raw_events``.

    Returns whether some events are duplicate candidates (``dup_candidates`` and ``dup_kept`` are
    then defined).
    """
    for statement in _validation_sql(con):
        con.execute(statement)
    dedupe, has_candidates = _dedupe_sql(con)
    for statement in dedupe:
        con.execute(statement)
    return has_candidates


def _validation_sql(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Statements defining ``checked_events``, ``event_summary`` and ``dup_hashes``.

    Set-based SQL over views, not copies: DuckDB reads only the columns a query needs. Each column
    is parsed from whatever type the source has (ISO / epoch timestamps, 'yes'/'1' flags, text
    revenue); a value that does not parse quarantines its event with a reason, and the raw text of
    the parsed columns is kept for the quarantine file. Duplicates of ``(provider, event_id)``
    among otherwise valid events are ranked by time (the first is kept); only events whose key
    hash repeats are ranked (by their exact key), so the common case costs one hash aggregate of
    8-byte hashes, shared with the counts per quarantine reason (``event_summary``); see
    :func:`_dedupe_sql` for what follows.
    """
    types = _column_types(con, "raw_events")
    parsed: dict[str, str] = {}
    for f in EVENT_SCHEMA:
        duck = _DUCK_TYPES[str(f.type)]
        parsed[f.name] = f"TRY_CAST({f.name} AS {duck})" if f.name in types else f"NULL::{duck}"
    parsed["ts"] = _ts_sql(types.get("ts"))
    machine, bad_machine = _flag_sql("is_machine_open", types.get("is_machine_open"))
    bot, bad_bot = _flag_sql("is_bot_click", types.get("is_bot_click"))
    revenue, bad_revenue = _revenue_sql(types.get("revenue"))
    parsed.update(is_machine_open=machine, is_bot_click=bot, revenue=revenue)
    select = ", ".join(f"{expr} AS {name}" for name, expr in parsed.items())
    raw = ", ".join(
        f"TRY_CAST({c} AS VARCHAR) AS raw_{c}" if c in types else f"NULL::VARCHAR AS raw_{c}"
        for c in PARSED_COLUMNS
    )
    known = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    return [
        f"""CREATE VIEW checked_events AS
            SELECT * EXCLUDE (bad_machine, bad_bot, bad_revenue),
                CASE
                    WHEN event_id IS NULL OR event_id = '' THEN 'missing event_id'
                    WHEN recipient_key IS NULL OR recipient_key = '' THEN 'missing recipient_key'
                    WHEN {_address_sql("recipient_key")}
                        THEN 'recipient_key is an e-mail address, not a hashed key'
                    WHEN ts IS NULL THEN 'missing or unparseable ts'
                    WHEN ts < TIMESTAMPTZ '{_TS_MIN}' OR ts >= TIMESTAMPTZ '{_TS_MAX}'
                        THEN 'ts out of range (before 2000 or after 2099)'
                    WHEN event_type IS NULL OR event_type NOT IN ({known})
                        THEN 'unknown event_type'
                    WHEN bad_machine THEN 'unparseable is_machine_open'
                    WHEN bad_bot THEN 'unparseable is_bot_click'
                    WHEN bad_revenue THEN 'unparseable or non-finite revenue'
                    WHEN event_type = 'order' AND (revenue IS NULL OR revenue < 0)
                        THEN 'order without a valid revenue'
                END AS quarantine_reason
            FROM (
                SELECT {select}, {raw},
                    {bad_machine} AS bad_machine, {bad_bot} AS bad_bot,
                    {bad_revenue} AS bad_revenue
                FROM raw_events
            )""",
        # One scan for both the counts per reason and the duplicate candidates: valid events
        # grouped by an 8-byte hash of (provider, event_id), not by the strings themselves.
        f"""CREATE TEMP TABLE event_summary AS
            SELECT GROUPING(key_hash) = 1 AS by_reason, quarantine_reason, key_hash,
                count(*) AS n
            FROM (
                SELECT quarantine_reason,
                    CASE WHEN quarantine_reason IS NULL THEN {_KEY_HASH} END AS key_hash
                FROM checked_events
            )
            GROUP BY GROUPING SETS ((quarantine_reason), (key_hash))
            HAVING GROUPING(key_hash) = 1 OR (key_hash IS NOT NULL AND count(*) > 1)""",
        """CREATE TEMP TABLE dup_hashes AS
            SELECT key_hash FROM event_summary WHERE NOT by_reason""",
    ]


def _dedupe_sql(con: duckdb.DuckDBPyConnection) -> tuple[list[str], bool]:
    """Statements defining ``valid_events`` and ``quarantined_events`` over ``checked_events``.

    With no duplicate candidate (no key hash repeats: the common case) both are plain filters of
    ``checked_events``. Otherwise only the candidates (events whose key hash repeats) are ranked,
    by their exact key, and the first of each key is kept in ``dup_kept`` (one row per distinct
    key, parsed columns only): a hash collision of two distinct keys keeps both, and of exact
    copies (same key, time and recipient) one is kept. Ranking in its own statement, not inside
    the statistics query, keeps the window's buffers apart from the per-recipient aggregate's
    (peak RSS at 1 M with 10 % duplicates: 630 MiB against 970 MiB). Returns the statements and
    whether there were candidates.
    """
    (candidates,) = con.execute("SELECT count(*) FROM dup_hashes").fetchone()
    raw_cols = ", ".join(f"raw_{c}" for c in PARSED_COLUMNS)
    if not candidates:
        return [
            f"""CREATE VIEW valid_events AS
                SELECT * EXCLUDE (quarantine_reason, {raw_cols}) FROM checked_events
                WHERE quarantine_reason IS NULL""",
            """CREATE VIEW quarantined_events AS
                SELECT * FROM checked_events WHERE quarantine_reason IS NOT NULL""",
        ], False
    rank = (
        "row_number() OVER (PARTITION BY coalesce(provider, ''), event_id ORDER BY ts, "
        "recipient_key)"
    )
    # An anti join on the small candidate set (a hash probe per event), not a correlated
    # NOT EXISTS, which DuckDB plans as a hash aggregate over every event's key.
    return [
        f"""CREATE VIEW dup_candidates AS
            SELECT * FROM checked_events
            WHERE quarantine_reason IS NULL
                AND {_KEY_HASH} IN (SELECT key_hash FROM dup_hashes)""",
        f"""CREATE TEMP TABLE dup_kept AS
            SELECT * EXCLUDE (quarantine_reason, {raw_cols}) FROM dup_candidates
            QUALIFY {rank} = 1""",
        f"""CREATE VIEW valid_events AS
            SELECT * EXCLUDE (quarantine_reason, {raw_cols}) FROM checked_events
            WHERE quarantine_reason IS NULL
                AND {_KEY_HASH} NOT IN (SELECT key_hash FROM dup_hashes)
            UNION ALL
            SELECT * FROM dup_kept""",
        f"""CREATE VIEW quarantined_events AS
            SELECT * FROM checked_events WHERE quarantine_reason IS NOT NULL
            UNION ALL
            SELECT * REPLACE ('{DUPLICATE}' AS quarantine_reason) FROM dup_candidates
            QUALIFY {rank} > 1""",
    ], True


def _quarantine_select(con: duckdb.DuckDBPyConnection) -> str:
    """The quarantine file's rows, with every e-mail address in a text column removed.

    Quarantined rows are the malformed ones, where an unhashed address is most likely (a raw
    recipient_key, a url with ``?email=``, a Message-ID): the file is for finding and fixing rows
    (provider, event_id, reason, raw values), which needs no address.
    """
    text_columns = [
        name for name, kind in _column_types(con, "quarantined_events").items() if kind == "VARCHAR"
    ]
    replace = ", ".join(
        f"regexp_replace({c}, {_sql_str(EMAIL_PATTERN.pattern)}, '[e-mail address removed]', 'g') "
        f"AS {c}"
        for c in text_columns
    )
    return f"SELECT * REPLACE ({replace}) FROM quarantined_events"


def unassigned_events(rows: Sequence[dict[str, Any]]) -> int:
    """Valid events of recipients not on the assignment, from a compiled statistics query."""
    return sum(
        int(r["unassigned_events"] or 0)
        for r in rows
        if r["variant_id"] is None and int(r["all_segments"])
    )


def collect_stats(
    rows: Sequence[dict[str, Any]], columns: Sequence[StatColumn]
) -> tuple[list[GroupStats], dict[str, int]]:
    """GroupStats (and recipients per group) from the rows of a compiled statistics query.

    Shared by every engine and input, so DuckDB and Spark return identical records. Raises
    :class:`MetricsError` when a covariate or outcome value is missing in some population.
    """
    if any(r["variant_id"] is None and r["assigned"] for r in rows):
        raise MetricsError(
            "some rows have no variant_id; every recipient of the assignment or outcome table "
            "needs one (drop the rows, or assign them)"
        )
    rows = [r for r in rows if r["variant_id"] is not None]  # the unassigned events' group
    ordered = sorted(
        rows, key=lambda r: (-int(r["all_segments"]), str(r["segment"]), str(r["variant_id"]))
    )
    stats: list[GroupStats] = []
    assigned: dict[str, int] = {}
    by_metric: dict[str, list[StatColumn]] = {}
    for c in columns:
        by_metric.setdefault(c.metric, []).append(c)
    for row in ordered:
        segment = ALL_SEGMENTS if int(row["all_segments"]) else str(row["segment"])
        variant = str(row["variant_id"])
        if segment == ALL_SEGMENTS:
            assigned[variant] = int(row["assigned"])
        for metric, cols in by_metric.items():
            values = {c.stat: row[c.alias] for c in cols}
            if "missing_value" in values:
                if values["missing_value"]:
                    raise MetricsError(
                        f"outcome column {metric.removeprefix('column:')!r} has "
                        f"{int(values['missing_value'])} missing "
                        f"value(s) in variant {variant!r}; fill them (0 when nothing happened) or "
                        "drop those rows"
                    )
                continue
            covariates = {}
            for key, value in values.items():
                missing = key.endswith(":missing") and key.count(":") == 2
                if key.startswith("cov:") and missing and value:
                    raise MetricsError(
                        f"covariate {key.split(':')[1]!r} of metric {metric!r} is missing for "
                        f"{int(value)} recipient(s) of variant {variant!r}; fill or impute it"
                    )
            for name in dict.fromkeys(k.split(":")[1] for k in values if k.startswith("cov:")):
                cross_den = values.get(f"cov:{name}:cross_den")
                covariates[name] = CovariateSums(
                    sum=float(values[f"cov:{name}:sum"] or 0.0),
                    sum_sq=float(values[f"cov:{name}:sum_sq"] or 0.0),
                    cross=float(values[f"cov:{name}:cross"] or 0.0),
                    cross_den=None if cross_den is None else float(cross_den),
                    with_covariates={
                        k.split(":")[3]: float(v or 0.0)
                        for k, v in values.items()
                        if k.startswith(f"cov:{name}:with:")
                    },
                )
            optional = {
                k: (None if k not in values else float(values[k] or 0.0))
                for k in ("den_sum", "den_sum_sq", "cross_sum")
            }
            stats.append(
                GroupStats(
                    metric=metric,
                    variant_id=variant,
                    segment=segment,
                    n=int(values["n"] or 0),
                    # an empty group sums to 0 (SQL gives NULL)
                    sum=float(values["sum"] or 0.0),
                    sum_sq=float(values["sum_sq"] or 0.0),
                    covariates=covariates,
                    **optional,
                )
            )
    return stats, dict(sorted(assigned.items()))


def _cap_values(
    con: duckdb.DuckDBPyConnection, plan: Plan, caps: Mapping[str, float]
) -> dict[str, float]:
    """The winsorisation value of each capped mean metric (see :func:`compute_metrics`)."""
    return cap_values_of(con, cap_quantiles_sql(plan, caps, DUCKDB))


def cap_values_of(con: duckdb.DuckDBPyConnection, compiled: Any) -> dict[str, float]:
    """Run a compiled cap-quantile query (events or outcome table): metric → cap value."""
    if compiled is None:
        return {}
    query, aliases = compiled
    cursor = con.execute(query.sql, query.params)
    names = [d[0] for d in cursor.description]
    row = dict(zip(names, cursor.fetchone(), strict=True))
    return {m: float(row[a]) for m, a in aliases.items() if row[a] is not None}
