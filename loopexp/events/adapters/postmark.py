"""Postmark webhooks: one JSON object per POST, typed by ``RecordType``.

Bounces carry ``ID`` (the bounce id, the dedupe key); opens, clicks and deliveries have no id in the
body, so their id is a content hash (Postmark's retry-stable ``X-PM-Webhook-Trace-Id`` is an HTTP
header a body-only export does not keep). The legacy bounce body has no ``RecordType``. The variant
is the ``Metadata`` key named ``variant_field`` (or the ``Tag``, through ``variant_map``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from loopexp.events.adapters.base import (
    Context,
    IgnoredTypeError,
    RecordError,
    canonical_json,
    resolve_variant,
    row,
    text,
    to_utc,
)
from loopexp.events.adapters.registry import Adapter, register
from loopexp.events.config import IngestConfig

NAME = "postmark"

_SOFT = {"SoftBounce", "Transient", "DnsError", "AutoResponder", "MailFrontier", "Blocked"}
_TS = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


def detect(value: Any) -> bool:
    """A Postmark webhook body (``RecordType``, or the legacy bounce shape)."""
    if not isinstance(value, dict):
        return False
    return "RecordType" in value or ("MessageID" in value and "BouncedAt" in value)


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """Each body is one record."""
    yield value, Context()


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per Postmark webhook body."""
    if not isinstance(record, dict):
        raise RecordError("not a Postmark webhook object")
    kind = text(record.get("RecordType")) or ("Bounce" if "BouncedAt" in record else None)
    bounce_class = None
    if kind == "Delivery":
        event_type = "delivered"
    elif kind in ("Bounce", "SpamComplaint"):
        postmark_type = text(record.get("Type")) or ""
        bounce_class = postmark_type or None
        if kind == "SpamComplaint" or postmark_type == "SpamComplaint":
            event_type = "complaint"
        else:
            event_type = "bounce_soft" if postmark_type in _SOFT else "bounce_hard"
    elif kind in ("Open", "Click"):
        event_type = kind.lower()
    elif kind == "SubscriptionChange":
        if record.get("SuppressSending") is not True:
            raise IgnoredTypeError(NAME, kind)  # a reactivation: not an unsubscribe
        event_type = "unsubscribe"
    else:
        raise RecordError(f"unmapped postmark record type {kind!r}")
    metadata = record.get("Metadata") if isinstance(record.get("Metadata"), dict) else {}
    variant = metadata.get(config.variant_field)
    if variant is None and text(record.get("Tag")) in config.variant_map:
        variant = record.get("Tag")
    bounce_id = record.get("ID") if kind in ("Bounce", "SpamComplaint") else None
    return [
        row(
            event_id=f"{kind}:{bounce_id}" if bounce_id is not None else None,
            id_basis=canonical_json(record),
            event_type=event_type,
            ts=to_utc(record.get(_TS[kind])),
            address=text(record.get("Recipient") or record.get("Email")),
            message_id=text(record.get("MessageID")),
            campaign_id=text(record.get("Tag")),
            variant_id=resolve_variant(variant, config),
            url=text(record.get("OriginalLink")),
            user_agent=text(record.get("UserAgent")),
            ip=text((record.get("Geo") or {}).get("IP"))
            if isinstance(record.get("Geo"), dict)
            else None,
            bounce_class=bounce_class,
        )
    ]


class PostmarkAdapter(Adapter):
    """Postmark webhook bodies."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None}
    detect = staticmethod(detect)
    expand = staticmethod(expand)
    normalize = staticmethod(normalize)


register(PostmarkAdapter())
