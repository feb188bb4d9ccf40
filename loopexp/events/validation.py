"""The canonical event table's contract, once: which events are usable, and which copy counts.

Every engine that reads canonical events (DuckDB, Spark) validates them with this module, so the
same files give the same quarantine counts and the same statistics whatever the engine:

- **Parsing**: each column is read from whatever type the source has (ISO / RFC 2822 / epoch
  timestamps in text or numbers, ``'yes'`` / ``1`` flags, text revenue). A value that does not parse
  sets a ``bad_*`` marker, which a rule below turns into a reason.
- **Quarantine rules** (:data:`QUARANTINE_RULES`): data, a reason and a condition over the parsed
  columns, in order; an event gets the first reason whose condition holds.
- **Ingest's rules** (:data:`STAGED_RULES`): the same structure over the rows an adapter staged
  (before they are canonical events), compiled by the same dialect into ingest's one pass. The
  conditions both sets hold (a missing time, the known event types) are spelled once, here.
- **Dedupe** (:data:`DEDUPE_KEY`, :data:`DEDUPE_ORDER`): of the otherwise valid events sharing
  ``(provider, event_id)`` the first by time (then recipient) is kept; the rest are quarantined as
  :data:`DUPLICATE`.

The SQL is generated per dialect, as sqlglot structures dialects: one :class:`Dialect` base and a
subclass per engine (:class:`DuckDB`, :class:`Spark`) for the few expressions that differ; they
live in :mod:`loopexp.events.dialects` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loopexp.events.dialects import (  # noqa: F401 (re-exported: the engines import them here)
    DUCKDB,
    SPARK,
    Dialect,
    DialectName,
    DuckDB,
    Spark,
    TypeClass,
)
from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, TS_MAX, TS_MIN

#: Columns parsed from what providers send; their raw text is kept as ``raw_<column>``.
PARSED_COLUMNS: tuple[str, ...] = ("ts", "is_machine_open", "is_bot_click", "revenue")
_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")
_UNKNOWN = ("", "null", "none", "nan", "unknown", "n/a")
_NUMBER = "[+-]?[0-9]+([.][0-9]*)?"


# --- parsing ------------------------------------------------------------------------------------


def epoch_timestamp(d: Dialect, x: str) -> str:
    """Unix epoch in seconds, ms, µs or ns, told apart by magnitude (as pandas and Spark users do).

    Seconds below 1e11 reach the year 5138, milliseconds from 1e11 start in 1973: a plausible event
    time has exactly one reading. The out-of-range rule catches the rest.
    """

    def at(micros: str) -> str:
        return d.timestamp_from_micros(d.cast(f"round({micros})", "BIGINT"))

    return f"""CASE
        WHEN NOT {d.is_finite(x)} THEN NULL
        WHEN abs({x}) < 1e11 THEN {at(f"{x} * 1e6")}
        WHEN abs({x}) < 1e14 THEN {at(f"{x} * 1e3")}
        WHEN abs({x}) < 1e17 THEN {at(x)}
        WHEN abs({x}) < 1e20 THEN {at(f"{x} / 1e3")}
    END"""


def parse_ts(d: Dialect, kind: TypeClass, column: str = "ts") -> str:
    """The event time (a UTC instant, NULL when it does not parse) of a ``kind`` column."""
    tz = d.types["timestamp[us, tz=UTC]"]
    if kind == "timestamptz":
        return column
    if kind == "timestamp":
        return d.cast(column, tz, safe=False)  # naive: UTC (the session's time zone)
    if kind == "numeric":
        return epoch_timestamp(d, d.cast(column, "DOUBLE", safe=False))
    if kind == "string":
        number = epoch_timestamp(d, d.cast(f"trim({column})", "DOUBLE"))
        return f"""CASE
            WHEN {d.full_match(f"trim({column})", _NUMBER)} THEN {number}
            ELSE {d.parse_timestamp_text(column)}
        END"""
    return d.null("timestamp[us, tz=UTC]")


def parse_flag(d: Dialect, kind: TypeClass, column: str) -> tuple[str, str]:
    """(parsed BOOLEAN, unparseable condition) of a three-valued flag column."""
    if kind == "missing":
        return d.null("bool"), "false"
    if kind == "boolean":
        return column, "false"
    if kind == "string":
        v = f"lower(trim({column}))"

        def among(words: tuple[str, ...]) -> str:
            return f"{v} IN ({', '.join(map(d.string, words))})"

        parsed = f"CASE WHEN {among(_TRUE)} THEN true WHEN {among(_FALSE)} THEN false END"
        return parsed, f"({column} IS NOT NULL AND NOT {among(_UNKNOWN)} AND ({parsed}) IS NULL)"
    if kind == "numeric":
        parsed = f"CASE WHEN {column} = 1 THEN true WHEN {column} = 0 THEN false END"
        known = f"{column} IS NOT NULL AND NOT isnan({d.cast(column, 'DOUBLE', safe=False)})"
        return parsed, f"({known} AND ({parsed}) IS NULL)"
    return d.null("bool"), f"({column} IS NOT NULL)"


def parse_revenue(d: Dialect, kind: TypeClass, column: str = "revenue") -> tuple[str, str]:
    """(parsed DOUBLE, unparseable-or-non-finite condition) of the revenue column."""
    if kind == "missing":
        return d.null("double"), "false"
    if kind == "string":
        parsed = d.cast(f"trim({column})", "DOUBLE")
        return parsed, (
            f"(({column} IS NOT NULL AND trim({column}) <> '' AND {parsed} IS NULL) "
            f"OR NOT {d.is_finite(parsed)})"
        )
    if kind == "numeric":
        value = d.cast(column, "DOUBLE", safe=False)
        return value, f"NOT {d.is_finite(value)}"
    return d.null("double"), f"({column} IS NOT NULL)"


# --- the rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One quarantine reason and the condition (SQL over the parsed columns) that gives it.

    ``condition`` is shared SQL; the ``{field}`` names of :func:`rule_fields` (``{address}``,
    ``{ts_min}``, ``{ts_max}``, ``{known_event_type}``) are filled in per dialect, ``bad_<column>``
    are the parsers' unparseable markers.
    """

    reason: str
    condition: str
    hint: str = ""
    """What to fix when many events get this reason (shown when a run stops on them)."""


#: Conditions both rule sets hold, spelled once: no (parseable) time, and a type that is not one of
#: :data:`loopexp.events.schema.EVENT_TYPES`.
NO_TS = "ts IS NULL"
UNKNOWN_EVENT_TYPE = "event_type IS NULL OR NOT {known_event_type}"

ADDRESS_REASON = "recipient_key is an e-mail address, not a hashed key"
#: In order: an event gets the first reason whose condition holds.
QUARANTINE_RULES: tuple[Rule, ...] = (
    Rule("missing event_id", "event_id IS NULL OR event_id = ''"),
    Rule("missing recipient_key", "recipient_key IS NULL OR recipient_key = ''"),
    Rule(
        ADDRESS_REASON,
        "{address}",
        "hash addresses on the way in (`loopexp ingest`, loopexp.core.keys)",
    ),
    Rule(
        "missing or unparseable ts",
        NO_TS,
        "timestamps must be ISO 8601 (with an offset or UTC), RFC 2822, or Unix epoch seconds / "
        "milliseconds / microseconds",
    ),
    Rule(
        "ts out of range (before 2000 or after 2099)",
        "ts < {ts_min} OR ts >= {ts_max}",
        "the timestamps parse but are implausible: epoch values in the wrong unit?",
    ),
    Rule(
        "unknown event_type",
        UNKNOWN_EVENT_TYPE,
        f"event_type must be one of {', '.join(EVENT_TYPES)}",
    ),
    Rule("unparseable is_machine_open", "bad_is_machine_open"),
    Rule("unparseable is_bot_click", "bad_is_bot_click"),
    Rule("unparseable or non-finite revenue", "bad_revenue"),
    Rule(
        "order without a valid revenue",
        "event_type = 'order' AND (revenue IS NULL OR revenue < 0)",
    ),
)

#: Ingest's checks of a staged row (what an adapter made of a provider record; ``who`` is its
#: recipient: the key, else the normalised address), in order, after any reason the adapter gave.
#: Adapters parse times and map types themselves; these hold every adapter, a plug-in's too, to
#: the canonical table's contract. The reasons are in users' quarantine files: do not reword them.
STAGED_RULES: tuple[Rule, ...] = (
    Rule("missing recipient", "who IS NULL"),
    Rule("missing or unparseable timestamp", NO_TS),
    Rule("unknown event type", UNKNOWN_EVENT_TYPE),
)

DUPLICATE = "duplicate (provider, event_id)"
#: An event's identity, and which of its valid copies is kept (the first in this order).
DEDUPE_KEY: tuple[str, ...] = ("coalesce(provider, '')", "event_id")
DEDUPE_ORDER: tuple[str, ...] = ("ts", "recipient_key")
#: Every reason an event can be quarantined with, in rule order, the duplicate last.
REASONS: tuple[str, ...] = (*(r.reason for r in QUARANTINE_RULES), DUPLICATE)


def dedupe_rank() -> str:
    """Each valid event's rank among the copies of its key (1: the one kept)."""
    return (
        f"row_number() OVER (PARTITION BY {', '.join(DEDUPE_KEY)} "
        f"ORDER BY {', '.join(DEDUPE_ORDER)})"
    )


def rule_fields(d: Dialect, *, in_order: bool = False) -> dict[str, str]:
    """The dialect's SQL of each ``{field}`` a rule's condition may name.

    ``in_order``: for a query whose output keeps its input's row order (ingest).
    """
    return {
        "address": d.is_address("recipient_key"),
        "ts_min": d.timestamp_literal(TS_MIN.date().isoformat()),
        "ts_max": d.timestamp_literal(TS_MAX.date().isoformat()),
        "known_event_type": d.one_of("event_type", EVENT_TYPES, in_order=in_order),
    }


def _whens(
    d: Dialect,
    rules: tuple[Rule, ...],
    *,
    in_order: bool = False,
    extra_fields: Mapping[str, str] | None = None,
) -> str:
    """One ``WHEN condition THEN reason`` line per rule, in order."""
    fields = {**rule_fields(d, in_order=in_order), **(extra_fields or {})}
    return "\n".join(
        f"            WHEN {rule.condition.format_map(fields)} THEN {d.string(rule.reason)}"
        for rule in rules
    )


def reason_sql(
    d: Dialect, extra: tuple[Rule, ...] = (), extra_fields: Mapping[str, str] | None = None
) -> str:
    """The CASE giving each parsed event its quarantine reason (NULL: valid).

    ``extra`` rules (a send's scope, :mod:`loopexp.events.scope`) come after the canonical ones,
    their ``{field}`` names filled in from ``extra_fields``.
    """
    rules = QUARANTINE_RULES + extra
    return f"CASE\n{_whens(d, rules, extra_fields=extra_fields)}\n        END"


def staged_reason_sql(d: Dialect) -> str:
    """The CASE giving each staged row its quarantine reason (NULL: valid).

    The adapter's own reason (``quarantine_reason`` of the staged row) comes first, then
    :data:`STAGED_RULES`. The row needs ``who``, ``ts`` and ``event_type``.
    """
    return (
        "CASE\n            WHEN quarantine_reason IS NOT NULL THEN quarantine_reason\n"
        f"{_whens(d, STAGED_RULES, in_order=True)}\n        END"
    )


def checked_events_sql(
    d: Dialect,
    source_types: Mapping[str, str],
    source: str,
    extra: tuple[Rule, ...] = (),
    extra_fields: Mapping[str, str] | None = None,
) -> str:
    """SELECT of every event of ``source``, parsed, with ``raw_<column>`` and its reason.

    ``source_types`` maps the source's columns to their SQL types as the engine describes them
    (absent canonical columns are NULL). The result has the canonical columns
    (:data:`loopexp.events.schema.EVENT_SCHEMA`), ``raw_<c>`` for :data:`PARSED_COLUMNS` and
    ``quarantine_reason``; ``extra`` rules as in :func:`reason_sql`.
    """

    def kind(column: str) -> TypeClass:
        return "missing" if column not in source_types else d.type_class(source_types[column])

    parsed = {
        f.name: d.cast(f.name, d.types[str(f.type)])
        if f.name in source_types
        else d.null(str(f.type))
        for f in EVENT_SCHEMA
    }
    parsed["ts"] = parse_ts(d, kind("ts"))
    bad = {}
    for flag in ("is_machine_open", "is_bot_click"):
        parsed[flag], bad[flag] = parse_flag(d, kind(flag), flag)
    parsed["revenue"], bad["revenue"] = parse_revenue(d, kind("revenue"))
    raw = {
        f"raw_{c}": d.cast(c, d.types["string"]) if c in source_types else d.null("string")
        for c in PARSED_COLUMNS
    }
    inner = ",\n            ".join(
        [f"{expr} AS {name}" for name, expr in {**parsed, **raw}.items()]
        + [f"{expr} AS bad_{name}" for name, expr in bad.items()]
    )
    outer = ", ".join([*parsed, *raw])
    return (
        f"SELECT {outer},\n        {reason_sql(d, extra, extra_fields)} AS quarantine_reason\n"
        f"    FROM (\n        SELECT {inner}\n        FROM {source}\n    ) parsed"
    )
