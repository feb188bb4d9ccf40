"""Amazon SES event publishing: SNS notifications (the record in ``Message``) and Firehose lines.

A record has no event id: over SNS the envelope's ``MessageId`` (stable across retries) is the basis
of the id, otherwise ``mail.messageId`` + type + the event's own timestamp; either way combined with
the recipient key. A record naming several recipients (a delivery or bounce to several addresses)
gives one event per recipient, and each counts as one input record. Open and click carry no
recipient: it is ``mail.destination``, which must then name exactly one address. The variant is the
message tag named ``variant_field``.

An SNS HTTP endpoint also receives *control messages* (:func:`control_kind`): the
``SubscriptionConfirmation`` it gets first, an ``UnsubscribeConfirmation``, SES's "Successfully
validated SNS topic" test notification and the legacy ``AmazonSnsSubscriptionSucceeded``. They are
not events: ignored (counted, not errors), and skipped when a file's format is detected. Inbound
mail (``notificationType`` ``Received``, SES email receiving) posted to the same endpoint is ignored
too. A record without its own event timestamp takes the SNS envelope's ``Timestamp`` (when SNS
published it); a Send's own time is ``mail.timestamp``.
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
    "Received": "receipt",
}
#: Documented event types that are not an outcome of a send to a recipient (refused before
#: sending, a template that failed to render, a mail SES received): ignored, not errors.
IGNORED: frozenset[str] = frozenset({"Reject", "Rendering Failure", "Received"})
#: SNS message types that are not notifications (Amazon SNS "HTTP/HTTPS ... JSON format").
SNS_CONTROL_TYPES: frozenset[str] = frozenset(
    {"SubscriptionConfirmation", "UnsubscribeConfirmation"}
)
#: The notification SES publishes once when an SNS topic becomes an event destination.
VALIDATION_MESSAGE = "Successfully validated SNS topic"
#: The legacy (identity notification) counterpart, a record of this ``notificationType``.
SUBSCRIPTION_SUCCEEDED = "AmazonSnsSubscriptionSucceeded"


def detect(value: Any) -> bool:
    """An SNS notification envelope, or an SES event record."""
    if not isinstance(value, dict):
        return False
    if value.get("Type") == "Notification" and "Message" in value:
        return True
    return isinstance(value.get("mail"), dict) and (
        "eventType" in value or "notificationType" in value
    )


def control_kind(value: Any) -> str | None:
    """What SNS / SES control message ``value`` is (see the module docstring), or None."""
    if not isinstance(value, dict):
        return None
    sns_type = value.get("Type")
    if sns_type in SNS_CONTROL_TYPES and "TopicArn" in value:
        return str(sns_type)
    message: Any = value
    if sns_type == "Notification":
        message = value.get("Message")
        if isinstance(message, str) and message.startswith(VALIDATION_MESSAGE):
            return "SNS topic validation"
        if not isinstance(message, str) or SUBSCRIPTION_SUCCEEDED not in message:
            return None  # (an event: not parsed twice)
        try:
            message = json.loads(message)
        except ValueError:
            return None
    if isinstance(message, dict) and message.get("notificationType") == SUBSCRIPTION_SUCCEEDED:
        return SUBSCRIPTION_SUCCEEDED
    return None


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """The record itself (the SNS envelope is opened in :func:`normalize`, keeping its id)."""
    yield value, Context()


def _open_envelope(record: Any) -> tuple[dict, str | None, Any]:
    """The SES event record (out of its SNS envelope, if any), the envelope's id and time."""
    envelope_id = envelope_ts = None
    if isinstance(record, dict) and record.get("Type") == "Notification":
        envelope_id = text(record.get("MessageId"))
        envelope_ts = record.get("Timestamp")
        try:
            record = json.loads(record.get("Message") or "")
        except (TypeError, ValueError):
            raise RecordError("SNS notification whose Message is not an SES event record") from None
    if not isinstance(record, dict) or not isinstance(record.get("mail"), dict):
        raise RecordError("not an SES event record (no mail object)")
    return record, envelope_id, envelope_ts


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


def _event_time(kind: str | None, sub: dict, mail: dict, envelope_ts: Any) -> Any:
    """The record's own event time, else the SNS envelope's publication time.

    Never the send time (``mail.timestamp``) of a later event: an open dated at its send would
    move across every metric window.
    """
    own = mail.get("timestamp") if kind == "Send" else sub.get("timestamp")
    if own not in (None, ""):
        return own
    if envelope_ts not in (None, ""):
        return envelope_ts
    raise RecordError(
        f"SES {kind} record without its own timestamp ({_SUB.get(kind or '', '?')}.timestamp) "
        "and outside an SNS envelope"
    )


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per recipient the SES record concerns."""
    control = control_kind(record)
    if control is not None:
        raise IgnoredTypeError(NAME, control)  # SNS housekeeping, not an event
    record, envelope_id, envelope_ts = _open_envelope(record)
    kind = text(record.get("eventType") or record.get("notificationType"))
    sub = record.get(_SUB.get(kind or "", ""), {}) or {}
    if not isinstance(sub, dict):
        raise RecordError(f"SES {kind} record whose {_SUB.get(kind or '')} is not an object")
    mail = record["mail"]
    event_type, recipients, bounce_class = _outcome(kind, sub, mail.get("destination") or [])
    if not isinstance(recipients, list) or not recipients:
        raise RecordError(f"SES {kind} record without a recipient")
    ts = to_utc(_event_time(kind, sub, mail, envelope_ts))
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    tag = tags.get(config.variant_field)
    variant = resolve_variant(tag[0] if isinstance(tag, list) and tag else tag, config)
    campaign = tags.get("campaign") or tags.get("campaign_id")  # issue 28: either tag name
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
    control_kind = staticmethod(control_kind)
    expand = staticmethod(expand)
    normalize = staticmethod(normalize)


register(SesAdapter())
