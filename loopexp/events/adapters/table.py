"""Plain tables (CSV / Parquet) with a column mapping, and canonical tables.

``IngestConfig.columns`` maps canonical columns to the file's columns; ``email`` is an address to
hash, ``recipient_key`` an already-hashed key. ``IngestConfig.event_types`` maps the file's event
labels to canonical types. A table that already has the canonical columns needs no mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from loopexp.events.adapters.base import (
    Context,
    IgnoredTypeError,
    RecordError,
    canonical_json,
    flag,
    resolve_variant,
    row,
    text,
    to_utc,
)
from loopexp.events.adapters.registry import CSV, PARQUET, Adapter, register
from loopexp.events.config import IngestConfig
from loopexp.events.reader import IngestError, normalise_header
from loopexp.events.schema import EVENT_TYPES, REQUIRED_COLUMNS

NAME = "table"
#: The ``event_types`` target that marks a label as not an outcome (ignored, not an error).
IGNORE = "ignore"

_PASS = (
    "message_id",
    "campaign_id",
    "url",
    "user_agent",
    "ip",
    "bot_reason",
    "bounce_class",
    "currency",
)


def mapping(columns: list[str], config: IngestConfig) -> dict[str, str]:
    """Canonical column → file column: the configured mapping, else the identity on known names."""
    if config.columns:
        return dict(config.columns)
    known = {
        "event_id",
        "provider",
        "event_type",
        "ts",
        "recipient_key",
        "email",
        "variant_id",
        "is_machine_open",
        "is_bot_click",
        "revenue",
        *_PASS,
    }
    return {c: c for c in columns if c in known}


def missing_columns(columns: list[str], config: IngestConfig) -> list[str]:
    """Required canonical columns the mapping cannot find in the file."""
    m = mapping(columns, config)
    need = ["event_type", "ts"]
    missing = [c for c in need if c not in m or m[c] not in columns]
    if not any(k in m and m[k] in columns for k in ("email", "recipient_key")):
        missing.append("email or recipient_key")
    return missing


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per table row."""
    m = ctx.lookups["mapping"]
    get = {k: record.get(v) for k, v in m.items()}
    label = text(get.get("event_type"))
    event_type = config.event_types.get(label or "", label)
    if event_type == IGNORE:
        raise IgnoredTypeError(ctx.lookups.get("provider", NAME), label or "")
    if event_type not in EVENT_TYPES:
        raise RecordError(f"unmapped event type {label!r} (map it in ingest.event_types)")
    revenue = get.get("revenue")
    try:
        revenue = None if revenue in (None, "") else float(revenue)
    except (TypeError, ValueError):
        raise RecordError(f"revenue {str(revenue)[:20]!r} is not a number") from None
    key = text(get.get("recipient_key"))
    return [
        row(
            provider=text(get.get("provider")) or ctx.lookups.get("provider", "table"),
            event_id=text(get.get("event_id")) or None,
            id_basis=canonical_json(record),
            event_type=event_type,
            ts=to_utc(get.get("ts")),
            address=None if key else text(get.get("email")) or None,
            recipient_key=key or None,
            variant_id=resolve_variant(get.get("variant_id"), config),
            is_machine_open=flag(get.get("is_machine_open")),
            is_bot_click=flag(get.get("is_bot_click")),
            revenue=revenue,
            **{c: text(get.get(c)) or None for c in _PASS},
        )
    ]


def table_mapping(path: Path, header: list[str], config: IngestConfig) -> dict[str, str]:
    """Canonical column → the file's column, or an :class:`IngestError` naming what is missing."""
    norm = IngestConfig(
        **{
            **config.model_dump(),
            "columns": {k: normalise_header(v) for k, v in config.columns.items()},
        }
    )
    missing = missing_columns(header, norm)
    if missing:
        raise IngestError(
            f"{path}: cannot find column(s) {missing} (header: {header}). Map the file's columns "
            "to canonical ones in the spec's ingest.columns (e.g. email: 'Email Address', "
            f"ts: 'Timestamp', event_type: 'Action'), or pass --format with its provider. "
            f"Canonical columns: {', '.join(REQUIRED_COLUMNS)}"
        )
    return mapping(header, norm)


class TableAdapter(Adapter):
    """Plain CSV / Parquet tables, mapped by the spec's ``ingest.columns``; canonical tables."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: CSV, "canonical": None}
    reads = frozenset({CSV, PARQUET})
    generic = True
    normalize = staticmethod(normalize)

    def table_context(self, path: Path, columns: list[str], config: IngestConfig) -> Context:
        """The column mapping; rows are reported under the file kind (``csv``, ``parquet``)."""
        kind = PARQUET if path.name.lower().endswith(".parquet") else CSV
        return Context({"mapping": table_mapping(path, columns, config), "provider": kind})

    def table_format(self, kind: str, columns: list[str]) -> str:
        """``canonical`` for a Parquet file with the canonical columns, else ``table``."""
        canonical = kind == PARQUET and set(REQUIRED_COLUMNS) <= set(columns)
        return "canonical" if canonical else NAME


register(TableAdapter())
