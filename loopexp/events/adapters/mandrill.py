"""Mailchimp Transactional (Mandrill) webhook events: the ``mandrill_events`` array's elements.

Mandrill posts a form whose ``mandrill_events`` field is a JSON array of up to 1,000 events
(``loopexp collect`` stores the request; :mod:`loopexp.events.rawlog` splits the array). Each
event: ``event`` (send, deferral, hard_bounce, soft_bounce, open, click, spam, unsub, reject),
``_id`` (the dedupe key), ``ts`` (Unix seconds), ``msg`` (``email``, ``_id``, ``metadata``,
``tags``), ``url``/``user_agent``/``ip`` for opens and clicks. The variant is the ``metadata`` key
named ``variant_field``. Sync events (``type`` whitelist/blacklist) are not outcomes: ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from loopexp.events.adapters.base import (
    Context,
    IgnoredTypeError,
    RecordError,
    canonical_json,
    dig,
    first,
    resolve_variant,
    row,
    text,
    to_utc,
)
from loopexp.events.adapters.registry import Adapter, register
from loopexp.events.config import IngestConfig

NAME = "mandrill"

_TYPES = {
    "send": "send",
    "deferral": "deferred",
    "hard_bounce": "bounce_hard",
    "soft_bounce": "bounce_soft",
    "open": "open",
    "click": "click",
    "spam": "complaint",
    "unsub": "unsubscribe",
}
#: Documented events that are not an outcome of a send: ignored, not errors.
IGNORED: frozenset[str] = frozenset({"reject", "whitelist", "blacklist", "inbound"})


def detect(value: Any) -> bool:
    """A Mandrill event: ``event`` and ``msg`` (an object) with ``_id`` or ``ts``."""
    return (
        isinstance(value, dict)
        and "event" in value
        and isinstance(value.get("msg"), dict)
        and ("_id" in value or "ts" in value)
    )


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per Mandrill event."""
    if not isinstance(record, dict):
        raise RecordError("not a Mandrill event object")
    kind = text(record.get("event") or record.get("type"))
    if kind in IGNORED:
        raise IgnoredTypeError(NAME, kind or "")
    if kind not in _TYPES:
        raise RecordError(f"unmapped mandrill event type {kind!r}")
    event_type = _TYPES[kind]
    msg = record.get("msg") if isinstance(record.get("msg"), dict) else {}
    metadata = msg.get("metadata")
    variant = metadata.get(config.variant_field) if isinstance(metadata, dict) else None
    return [
        row(
            event_id=text(record.get("_id")),
            id_basis=canonical_json(record),
            event_type=event_type,
            ts=to_utc(record.get("ts")),
            address=text(msg.get("email")),
            message_id=text(msg.get("_id")),
            campaign_id=text(  # issue 28: the first tag names the campaign when no metadata does
                dig(msg, "metadata", "campaign_id")
                or first(msg.get("tags"))
                or msg.get("subaccount")
            ),
            variant_id=resolve_variant(variant, config),
            url=text(record.get("url")) if event_type == "click" else None,
            user_agent=text(record.get("user_agent")),
            ip=text(record.get("ip")),
            bounce_class=text(msg.get("bounce_description") or msg.get("diag"))
            if event_type.startswith("bounce")
            else None,
        )
    ]


class MandrillAdapter(Adapter):
    """Mandrill webhook events (as the webhook receiver stores them)."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None}
    detect = staticmethod(detect)
    normalize = staticmethod(normalize)


register(MandrillAdapter())
