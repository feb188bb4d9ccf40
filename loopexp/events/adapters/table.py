"""Plain tables (CSV / Parquet) with a column mapping, and canonical tables.

``IngestConfig.columns`` maps canonical columns to the file's columns; ``email`` is an address to
hash, ``recipient_key`` an already-hashed key. ``IngestConfig.event_types`` maps the file's event
labels to canonical types. A table that already has the canonical columns needs no mapping.
"""

from __future__ import annotations

from typing import Any

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
from loopexp.events.config import IngestConfig
from loopexp.events.schema import EVENT_TYPES

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
