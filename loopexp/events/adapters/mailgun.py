"""Mailgun: webhook bodies (``{"signature", "event-data"}`` or the bare event) and Events API pages.

Dedupe on ``event-data.id``; ``timestamp`` is float Unix seconds; ``client-info.bot`` (``apple``,
``gmail``, ``generic``) marks machine opens and bot clicks; the variant comes from the user
variable named ``variant_field`` (custom ``v:`` variables set at send time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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

NAME = "mailgun"

_TYPES = {
    "accepted": "send",
    "delivered": "delivered",
    "opened": "open",
    "clicked": "click",
    "unsubscribed": "unsubscribe",
    "complained": "complaint",
}
#: Documented event types that are not an outcome of a send (rejected before sending, stored
#: inbound mail, mailing-list upload events): ignored, not errors.
IGNORED: frozenset[str] = frozenset(
    {"rejected", "stored", "list_member_uploaded", "list_member_upload_error", "list_uploaded"}
)


def detect(value: Any) -> bool:
    """Mailgun's webhook envelope, a bare event, or an Events API page."""
    if not isinstance(value, dict):
        return False
    if "event-data" in value:
        return True
    if isinstance(value.get("items"), list) and "paging" in value:
        return True
    return "recipient" in value and "event" in value and ("message" in value or "id" in value)


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """One record per webhook body; one per item of an Events API page."""
    if isinstance(value, dict) and isinstance(value.get("items"), list) and "paging" in value:
        for item in value["items"]:
            yield item, Context()
    else:
        yield value, Context()


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per Mailgun event."""
    data = record.get("event-data", record) if isinstance(record, dict) else None
    if not isinstance(data, dict):
        raise RecordError("not a Mailgun event object")
    kind = text(data.get("event"))
    if kind == "failed":
        permanent = text(data.get("severity")) == "permanent"
        event_type = "bounce_hard" if permanent else "deferred"
    elif kind in _TYPES:
        event_type = _TYPES[kind]
    elif kind in IGNORED:
        raise IgnoredTypeError(NAME, kind)
    else:
        raise RecordError(f"unmapped mailgun event type {kind!r}")
    bot = dig(data, "client-info", "bot")
    is_bot = bool(bot) if bot not in (None, "") else None
    user_vars = data.get("user-variables")
    variant = user_vars.get(config.variant_field) if isinstance(user_vars, dict) else None
    campaigns = data.get("campaigns")
    campaign = campaigns[0] if isinstance(campaigns, list) and campaigns else None
    return [
        row(
            event_id=text(data.get("id")),
            id_basis=canonical_json(data),
            event_type=event_type,
            ts=to_utc(data.get("timestamp")),
            address=text(data.get("recipient")),
            message_id=text(dig(data, "message", "headers", "message-id")),
            campaign_id=text(campaign.get("id") if isinstance(campaign, dict) else campaign)
            # issue 28: else a ``campaign_id`` user variable (v:campaign_id), else the first tag
            or text(user_vars.get("campaign_id") if isinstance(user_vars, dict) else None)
            or text(first(data.get("tags"))),
            variant_id=resolve_variant(variant, config),
            url=text(data.get("url")),
            user_agent=text(dig(data, "client-info", "user-agent")),
            ip=text(data.get("ip")),
            is_machine_open=is_bot if event_type == "open" else None,
            is_bot_click=is_bot if event_type == "click" else None,
            bot_reason="provider_flag" if is_bot and event_type in ("open", "click") else None,
            bounce_class=text(dig(data, "delivery-status", "bounce-type") or data.get("reason"))
            if kind == "failed"
            else None,
        )
    ]


class MailgunAdapter(Adapter):
    """Mailgun webhook bodies and Events API pages."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None}
    detect = staticmethod(detect)
    expand = staticmethod(expand)
    normalize = staticmethod(normalize)


register(MailgunAdapter())
