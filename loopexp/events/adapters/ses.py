"""Amazon SES event publishing: SNS notifications (the record in ``Message``) and Firehose lines.

A record has no event id: over SNS the envelope's ``MessageId`` (stable across retries) is the basis
of the id, otherwise ``mail.messageId`` + type + the event's own timestamp; either way combined with
the recipient key. A record naming several recipients (a delivery or bounce to several addresses)
gives one event per recipient, and each counts as one input record. Open and click carry no
recipient: it is ``mail.destination``, which must then name exactly one address. The variant is the
message tag named ``variant_field``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from loopexp.events.adapters.base import (
    Context,
    IgnoredTypeError,
    RecordError,
    dig,
    resolve_variant,
    row,
    text,
    to_utc,
)
from loopexp.events.adapters.registry import Adapter, register
from loopexp.events.config import IngestConfig

NAME = "ses"

_SUB = {
    "Send": "send",
    "Delivery": "delivery",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Open": "open",
    "Click": "click",
    "DeliveryDelay": "deliveryDelay",
    "Subscription": "subscription",
    "Reject": "reject",
    "Rendering Failure": "failure",
}
#: Documented event types that are not an outcome of a send to a recipient (refused before
#: sending, a template that failed to render): ignored, not errors.
IGNORED: frozenset[str] = frozenset({"Reject", "Rendering Failure"})


def detect(value: Any) -> bool:
    """An SNS notification envelope, or an SES event record."""
    if not isinstance(value, dict):
        return False
    if value.get("Type") == "Notification" and "Message" in value:
        return True
    return isinstance(value.get("mail"), dict) and (
        "eventType" in value or "notificationType" in value
    )


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """The record itself (the SNS envelope is opened in :func:`normalize`, keeping its id)."""
    yield value, Context()


def _open_envelope(record: Any) -> tuple[dict, str | None]:
    """The SES event record (out of its SNS envelope, if any) and the envelope's id."""
    envelope_id = None
    if isinstance(record, dict) and record.get("Type") == "Notification":
        envelope_id = text(record.get("MessageId"))
        try:
            record = json.loads(record.get("Message") or "")
        except (TypeError, ValueError):
            raise RecordError("SNS notification whose Message is not an SES event record") from None
    if not isinstance(record, dict) or not isinstance(record.get("mail"), dict):
        raise RecordError("not an SES event record (no mail object)")
    return record, envelope_id


def _addresses(sub: dict, key: str) -> list:
    return [dig(r, "emailAddress") for r in sub.get(key) or []]


def _outcome(kind: str | None, sub: dict, destination: Any) -> tuple[str, Any, str | None]:
    """Canonical event type, recipients and bounce class of an SES record of type ``kind``."""
    if kind == "Delivery":
        return "delivered", sub.get("recipients") or destination, None
    if kind == "Send":
        return "send", destination, None
    if kind == "Bounce":
        permanent = sub.get("bounceType") == "Permanent"
        recipients = _addresses(sub, "bouncedRecipients")
        return (
            "bounce_hard" if permanent else "bounce_soft",
            recipients,
            text(sub.get("bounceSubType")),
        )
    if kind == "Complaint":
        return "complaint", _addresses(sub, "complainedRecipients"), None
    if kind == "DeliveryDelay":
        return "deferred", _addresses(sub, "delayedRecipients"), None
    if kind == "Subscription":
        prefs = sub.get("newTopicPreferences") or {}
        statuses = [
            dig(t, "subscriptionStatus") for t in prefs.get("topicSubscriptionStatus") or []
        ]
        if not (prefs.get("unsubscribeAll") or "OptOut" in statuses):
            raise IgnoredTypeError(NAME, "Subscription")  # an opt-in: not an unsubscribe
        return "unsubscribe", destination, None
    if kind in ("Open", "Click"):
        if not isinstance(destination, list) or len(destination) != 1:
            raise RecordError(
                f"SES {kind} of a message to {len(destination or [])} recipients: "
                "cannot tell which one (send one message per recipient)"
            )
        return kind.lower(), destination, None
    if kind in IGNORED:
        raise IgnoredTypeError(NAME, kind)
    raise RecordError(f"unmapped ses event type {kind!r}")


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per recipient the SES record concerns."""
    record, envelope_id = _open_envelope(record)
    kind = text(record.get("eventType") or record.get("notificationType"))
    sub = record.get(_SUB.get(kind or "", ""), {}) or {}
    if not isinstance(sub, dict):
        raise RecordError(f"SES {kind} record whose {_SUB.get(kind or '')} is not an object")
    mail = record["mail"]
    event_type, recipients, bounce_class = _outcome(kind, sub, mail.get("destination") or [])
    if not isinstance(recipients, list) or not recipients:
        raise RecordError(f"SES {kind} record without a recipient")
    ts = to_utc(sub.get("timestamp") or mail.get("timestamp"))
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    tag = tags.get(config.variant_field)
    variant = resolve_variant(tag[0] if isinstance(tag, list) and tag else tag, config)
    campaign = tags.get("campaign")
    basis = envelope_id or f"{mail.get('messageId')}|{kind}|{sub.get('timestamp')}"
    return [
        row(
            event_id=None,
            id_basis=f"{basis}|{i}",
            event_type=event_type,
            ts=ts,
            address=text(address),
            message_id=text(mail.get("messageId")),
            campaign_id=text((campaign or [None])[0]) if isinstance(campaign, list) else None,
            variant_id=variant,
            url=text(sub.get("link")),
            user_agent=text(sub.get("userAgent")),
            ip=text(sub.get("ipAddress")),
            bounce_class=bounce_class,
        )
        for i, address in enumerate(recipients)
    ]


class SesAdapter(Adapter):
    """SES event publishing (SNS notifications and Firehose records)."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None}
    detect = staticmethod(detect)
    expand = staticmethod(expand)
    normalize = staticmethod(normalize)


register(SesAdapter())
