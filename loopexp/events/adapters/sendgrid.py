"""SendGrid Event Webhook: JSON arrays (webhook batches) and NDJSON (one event per line), in SQL.

Exports run to millions of lines, so the mapping is one DuckDB query: ``read_json`` with the
columns loopexp needs when the file is clean; line by line (``json_extract`` per line, keeping the
raw line for the quarantine) when it is not, or when any record must be quarantined. Dedupe on
``sg_event_id``; ``timestamp`` in seconds or milliseconds (both occur); ``sg_machine_open`` marks
machine opens; the variant is the custom arg named ``variant_field``, else the A/B
``marketing_campaign_version``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from loopexp.core.sql import sql_string
from loopexp.events.adapters.base import ignored_reason
from loopexp.events.adapters.registry import Adapter, BulkJob, BulkResult, register
from loopexp.events.config import IngestConfig
from loopexp.events.schema import TS_MAX, TS_MIN

if TYPE_CHECKING:
    import duckdb

NAME = "sendgrid"

#: JSON fields read from each event (custom args are flattened into the event by SendGrid).
FIELDS: tuple[str, ...] = (
    "email",
    "timestamp",
    "event",
    "sg_event_id",
    "sg_message_id",
    "marketing_campaign_id",
    "singlesend_id",
    "category",  # a string or an array; the campaign of transactional sends (issue 28)
    "marketing_campaign_version",
    "url",
    "useragent",
    "ip",
    "sg_machine_open",
    "type",
    "bounce_classification",
    "flow_id",  # custom args a flow sets on its sends (issue 26), flattened by SendGrid
    "step_id",
)

_TYPES = {
    "processed": "send",
    "delivered": "delivered",
    "deferred": "deferred",
    "open": "open",
    "click": "click",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
    "spamreport": "complaint",
}
#: Documented events that are not an outcome of a send (dropped before sending, a resubscription,
#: account status): ignored, not errors (quarantined with an ``ignored_type`` reason).
IGNORED: tuple[str, ...] = ("dropped", "group_resubscribe", "account_status_change")


def detect(value: Any) -> bool:
    """A SendGrid event object: ``event`` with ``sg_event_id`` or ``email`` (not Mailgun's)."""
    return (
        isinstance(value, dict)
        and "event" in value
        and ("sg_event_id" in value or "email" in value)
        and "recipient" not in value
        and "event-data" not in value
    )


def fields(config: IngestConfig) -> list[str]:
    """The fields to read: :data:`FIELDS` plus the variant's custom arg."""
    return list(dict.fromkeys([*FIELDS, config.variant_field]))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fast_relation_sql(path: str, shape: str, config: IngestConfig) -> str:
    """A relation of the fields, straight from ``read_json`` (fails on any malformed record).

    Only the fields loopexp needs are read, each as VARCHAR (no type detection over every key).
    Every row gets the file's first record number: numbering rows here would cost a
    single-threaded window; :func:`stage_fast` numbers them by the table's row id instead.
    """
    cols = ", ".join(f"{sql_string(f)}: 'VARCHAR'" for f in fields(config))
    fmt = "array" if shape == "array" else "newline_delimited"
    select = ", ".join(f"{_q(f)} AS f{i}" for i, f in enumerate(fields(config)))
    return (
        f"SELECT 1 AS rec_no, NULL::VARCHAR AS raw, TRUE AS is_object, "
        f"{select} FROM read_json({sql_string(path)}, format='{fmt}', columns={{{cols}}}, "
        "maximum_object_size=16777216)"
    )


def lines_relation_sql(path: str) -> str:
    """Every non-blank line of a file as ``raw`` (nothing parsed yet, nothing can fail)."""
    return (
        "SELECT row_number() OVER () AS rec_no, line AS raw FROM read_csv("
        f"{sql_string(path)}, columns={{'line': 'VARCHAR'}}, delim=chr(1), quote='', escape='', "
        "header=false, auto_detect=false, strict_mode=false, all_varchar=true, "
        "max_line_size=16777216) WHERE trim(coalesce(line, '')) <> ''"
    )


def parsed_relation_sql(raw_relation: str, config: IngestConfig) -> str:
    """Fields extracted from a relation of raw JSON texts (``rec_no``, ``raw``)."""
    paths = ", ".join(sql_string("$." + _q(f)) for f in fields(config))
    select = ", ".join(
        f"CASE WHEN ok THEN v[{i + 1}] END AS f{i}" for i, f in enumerate(fields(config))
    )
    return f"""
        SELECT rec_no, raw, ok AS is_object, {select} FROM (
            SELECT rec_no, raw, ok,
                CASE WHEN ok THEN json_extract_string(raw, [{paths}]) END AS v
            FROM (SELECT rec_no, raw,
                    coalesce(json_valid(raw) AND json_type(raw) = 'OBJECT', FALSE) AS ok
                  FROM ({raw_relation})))"""


def stage_sql(relation: str, config: IngestConfig, first_no: int, source: str) -> str:
    """Staged rows (see ``adapters.base.STAGE_FIELDS``) from a field relation.

    Built in layers so each expensive expression (casting the timestamp) is computed once.
    """
    f = {name: f"f{i}" for i, name in enumerate(fields(config))}
    types = " ".join(f"WHEN {sql_string(k)} THEN {sql_string(v)}" for k, v in _TYPES.items())
    event_type = (
        f"CASE WHEN {f['event']} = 'bounce' THEN "
        f"CASE WHEN {f['type']} = 'blocked' THEN 'bounce_soft' ELSE 'bounce_hard' END "
        f"ELSE CASE {f['event']} {types} END END"
    )
    secs = (
        "CASE WHEN abs(num) >= 1e14 THEN num / 1e6 "
        "WHEN abs(num) >= 1e11 THEN num / 1e3 ELSE num END"
    )
    # The same range as every adapter (schema.TS_MIN/TS_MAX), for epoch numbers and ISO text alike.
    low, high = int(TS_MIN.timestamp()), int(TS_MAX.timestamp())
    text_ts = f"TRY_CAST({f['timestamp']} AS TIMESTAMPTZ)"
    ts = (
        f"CASE WHEN secs >= {low} AND secs < {high} THEN to_timestamp(secs) "
        f"WHEN num IS NULL AND {text_ts} >= to_timestamp({low}) "
        f"AND {text_ts} < to_timestamp({high}) THEN {text_ts} END"
    )
    variant = f"coalesce(nullif({f[config.variant_field]}, ''), {f['marketing_campaign_version']})"
    if config.variant_map:
        cases = " ".join(
            f"WHEN {sql_string(k)} THEN {sql_string(v)}" for k, v in config.variant_map.items()
        )
        variant = f"CASE {variant} {cases} ELSE {variant} END"
    machine = f"CASE WHEN et = 'open' THEN TRY_CAST({f['sg_machine_open']} AS BOOLEAN) END"
    basis = "concat_ws(chr(31), " + ", ".join(f"coalesce(f{i}, '')" for i in range(len(f))) + ")"
    event_id = f"nullif({f['sg_event_id']}, '')"
    ignored = ", ".join(sql_string(t) for t in IGNORED)
    # issue 28: a category array's first item (an array arrives as its JSON text)
    category = (
        f"nullif(CASE WHEN json_valid({f['category']}) AND starts_with({f['category']}, '[') "
        f"THEN json_extract_string({f['category']}, '$[0]') ELSE {f['category']} END, '')"
    )
    return f"""
        SELECT {first_no} + rec_no - 1 AS input_no, {sql_string(source)} AS source,
            'sendgrid' AS provider, {event_id} AS event_id,
            CASE WHEN {event_id} IS NULL THEN {basis} END AS id_basis,
            et AS event_type, ts_parsed AS ts, nullif({f["email"]}, '') AS address,
            NULL::VARCHAR AS recipient_key, trim({f["sg_message_id"]}) AS message_id,
            coalesce({f["marketing_campaign_id"]}, {f["singlesend_id"]}, {category}) AS campaign_id,
            {variant} AS variant_id, {f["url"]} AS url, {f["useragent"]} AS user_agent,
            {f["ip"]} AS ip, machine AS is_machine_open, NULL::BOOLEAN AS is_bot_click,
            CASE WHEN machine THEN 'provider_flag' END AS bot_reason,
            CASE WHEN et LIKE 'bounce%' THEN coalesce({f["bounce_classification"]}, {f["type"]})
                END AS bounce_class,
            NULL::DOUBLE AS revenue, NULL::VARCHAR AS currency,
            {f["flow_id"]} AS flow_id, {f["step_id"]} AS step_id,
            CASE
                WHEN NOT is_object THEN CASE WHEN raw IS NOT NULL AND json_valid(raw)
                    THEN 'not a JSON object' ELSE 'unparseable JSON' END
                WHEN et IS NULL AND list_contains([{ignored}], {f["event"]})
                    THEN {sql_string(ignored_reason(NAME, ""))} || {f["event"]}
                WHEN et IS NULL THEN 'unmapped sendgrid event type '
                    || coalesce({sql_string("'")} || {f["event"]} || {sql_string("'")}, '(missing)')
                WHEN ts_parsed IS NULL THEN CASE WHEN {f["timestamp"]} IS NULL
                    THEN 'missing timestamp' ELSE 'unparseable or out-of-range timestamp' END
            END AS quarantine_reason,
            raw
        FROM (SELECT *, {ts} AS ts_parsed, {machine} AS machine FROM (
              SELECT *, {secs} AS secs FROM (
              SELECT *, TRY_CAST({f["timestamp"]} AS DOUBLE) AS num, {event_type} AS et
              FROM ({relation}))))"""


def stage_fast(
    con: duckdb.DuckDBPyConnection,
    path: str,
    shape: str,
    config: IngestConfig,
    first_no: int,
    table: str,
    wrap: Callable[[str], str],
) -> int | None:
    """Stage a file of well-formed JSON through ``read_json`` into ``table``; None when it is not.

    ``wrap`` turns the staged-row query into the checked one (ingest's common checks), so the
    file is read, mapped and checked in one pass. Rows keep the file's order (the table's row id
    is the record's number in the file). Records to quarantine (an ignored or unknown type, a bad
    timestamp) get their raw JSON text from a second, positional read of the same file, paid only
    when there are any. Malformed JSON anywhere makes ``read_json`` fail: None (use the slow path).
    """
    import duckdb  # noqa: PLC0415 (the registry loads adapters without DuckDB)

    sql = wrap(stage_sql(fast_relation_sql(path, shape, config), config, first_no, path))
    try:
        con.execute("SET preserve_insertion_order = true")  # row id = position in the file
        # the path is the same on every row: the reader adds it (see loopexp.events.checks)
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT * EXCLUDE (source) FROM ({sql})")
    except (duckdb.Error, UnicodeError):
        con.execute(f"DROP TABLE IF EXISTS {table}")
        return None
    finally:
        con.execute("SET preserve_insertion_order = false")
    (n, bad) = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE quarantine_reason IS NOT NULL) FROM {table}"
    ).fetchone()
    if bad and not _attach_raw(con, path, shape, table):
        con.execute(f"DROP TABLE {table}")
        return None
    return int(n)


def _attach_raw(con: duckdb.DuckDBPyConnection, path: str, shape: str, table: str) -> bool:
    """Fill ``raw`` of the quarantined rows from a positional read of the file's JSON objects."""
    import duckdb  # noqa: PLC0415

    fmt = "array" if shape == "array" else "newline_delimited"
    objects = f"read_json_objects({sql_string(path)}, format='{fmt}', maximum_object_size=16777216)"
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE sg_raw AS
                SELECT s.rid, o.json::VARCHAR AS raw
                FROM (SELECT rowid AS rid, quarantine_reason FROM {table}) s
                POSITIONAL JOIN {objects} o
                WHERE s.quarantine_reason IS NOT NULL OR s.rid IS NULL OR o.json IS NULL"""
        )
        (misaligned,) = con.execute(
            "SELECT count(*) FROM sg_raw WHERE rid IS NULL OR raw IS NULL"
        ).fetchone()
        if misaligned:
            return False
        con.execute(f"UPDATE {table} t SET raw = r.raw FROM sg_raw r WHERE t.rowid = r.rid")
        return True
    except (duckdb.Error, UnicodeError):
        return False
    finally:
        con.execute("DROP TABLE IF EXISTS sg_raw")


def stage_lines(
    con: duckdb.DuckDBPyConnection, path: str, config: IngestConfig, first_no: int
) -> int:
    """Stage an NDJSON file line by line: every line is one input record, parseable or not."""
    sql = stage_sql(parsed_relation_sql(lines_relation_sql(path), config), config, first_no, path)
    (before,) = con.execute("SELECT count(*) FROM staged_rows").fetchone()
    con.execute(f"INSERT INTO staged_rows BY NAME {sql}")
    (after,) = con.execute("SELECT count(*) FROM staged_rows").fetchone()
    return int(after - before)


def stage_texts(
    con: duckdb.DuckDBPyConnection,
    texts: list[tuple[int, str]],
    config: IngestConfig,
    first_no: int,
    source: str,
) -> int:
    """Stage records split in Python (array elements), as (offset in the file, raw JSON text)."""
    import pyarrow as pa  # noqa: PLC0415

    table = pa.table(
        {
            "rec_no": pa.array([i + 1 for i, _ in texts], pa.int64()),
            "raw": pa.array([t for _, t in texts], pa.string()),
        }
    )
    con.register("sg_texts", table)
    try:
        sql = stage_sql(
            parsed_relation_sql("SELECT * FROM sg_texts", config), config, first_no, source
        )
        con.execute(f"INSERT INTO staged_rows BY NAME {sql}")
    finally:
        con.unregister("sg_texts")
    return len(texts)


class SendgridAdapter(Adapter):
    """SendGrid Event Webhook exports, mapped in DuckDB (never record by record in Python)."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None}
    detect = staticmethod(detect)

    def stage_bulk(self, con: duckdb.DuckDBPyConnection, job: BulkJob) -> BulkResult | None:
        """A plain file read by DuckDB alone.

        Checked in one pass when every record is JSON, else (NDJSON) line by line; None when
        only a split in Python can salvage it.
        """
        import duckdb  # noqa: PLC0415

        if not job.plain or job.shape not in ("array", "ndjson"):
            return None
        path = str(job.path)
        n = stage_fast(con, path, job.shape, job.config, job.first_no, job.table, job.check)
        if n is not None:
            return BulkResult(n, job.table)
        if job.shape == "ndjson":
            try:
                return BulkResult(stage_lines(con, path, job.config, job.first_no))
            except (duckdb.Error, UnicodeError):
                pass  # e.g. invalid UTF-8: split in Python, which quarantines per line
        return None

    def stage_records(
        self, con: duckdb.DuckDBPyConnection, texts: list[tuple[int, str]], job: BulkJob
    ) -> bool:
        """Records split in Python (a truncated array salvaged, bad bytes caught), mapped in SQL."""
        if texts:
            stage_texts(con, texts, job.config, job.first_no, str(job.path))
        return True


register(SendgridAdapter())
