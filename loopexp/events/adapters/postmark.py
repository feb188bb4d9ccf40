"""Postmark webhooks: one JSON object per POST, typed by ``RecordType``.

Bounces carry ``ID`` (the bounce id, the dedupe key); opens, clicks and deliveries have no id in the
body, so their id is a content hash (Postmark's retry-stable ``X-PM-Webhook-Trace-Id`` is an HTTP
header a body-only export does not keep). The legacy bounce body has no ``RecordType``. The variant
is the ``Metadata`` key named ``variant_field`` (or the ``Tag``, through ``variant_map``).

Each bounce ``Type`` / ``TypeCode`` of Postmark's published table is mapped deliberately
(:data:`BOUNCE_TYPES`), and a ``SubscriptionChange`` is an unsubscribe only when it is a manual
suppression: Postmark also posts the Bounce / SpamComplaint webhook for the suppressions it makes
itself, so counting those again would inflate ``unsubscribe_rate`` (a guardrail that can veto).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Final

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

#: A bounce type that is not an outcome of the send (kept in the quarantine as ``ignored_type``).
IGNORE: Final = "ignore"
#: A bounce type Postmark itself could not classify: quarantined as an error, never guessed.
UNCLASSIFIED: Final = "unclassified"

#: Postmark's bounce types (``Type``, ``TypeCode``; Postmark's Bounce API "bounce types" table)
#: → canonical event type, :data:`IGNORE` or :data:`UNCLASSIFIED`. ``bounce_hard``: the address
#: cannot receive mail (Postmark deactivates it); ``bounce_soft``: this message was not delivered
#: but the address stays valid; ignored: a message that came back without being a failure of the
#: send (an out-of-office reply, a sender challenge, a subscribe request, a test) or a failure
#: before anything was sent (an SMTP API error, a template that did not render).
BOUNCE_TYPES: Final[Mapping[str, tuple[int, str]]] = {
    "HardBounce": (1, "bounce_hard"),  # unknown user, mailbox not found
    "Transient": (2, "bounce_soft"),  # message delayed (temporary)
    "Unsubscribe": (16, "unsubscribe"),  # the recipient asked to be removed, by reply
    "Subscribe": (32, IGNORE),  # a request to be added: not about this send
    "AutoResponder": (64, IGNORE),  # out of office / on vacation: the message arrived
    "AddressChange": (128, IGNORE),  # the recipient announced a new address: it arrived
    "DnsError": (256, "bounce_soft"),  # a temporary DNS error
    "SpamNotification": (512, "bounce_soft"),  # blocked or filed as spam by a filter
    "OpenRelayTest": (1024, IGNORE),  # a relay test message, not a reply to ours
    "Unknown": (2048, UNCLASSIFIED),  # "unable to classify the NDR"
    "SoftBounce": (4096, "bounce_soft"),  # mailbox full, over quota, account disabled
    "VirusNotification": (8192, "bounce_soft"),  # refused as infected: the address is fine
    "ChallengeVerification": (16384, IGNORE),  # "verify you sent this": not a bounce
    "BadEmailAddress": (100000, "bounce_hard"),  # not a valid address
    "SpamComplaint": (100001, "complaint"),  # the recipient marked it as spam
    "ManuallyDeactivated": (100002, IGNORE),  # the sender's own action, not the recipient's
    "Unconfirmed": (100003, IGNORE),  # registration not confirmed: not about this send
    "Blocked": (100006, "bounce_soft"),  # ISP block (content or blocklist)
    "SMTPApiError": (100007, IGNORE),  # refused by Postmark's SMTP API before sending
    "InboundError": (100008, IGNORE),  # an inbound message failed: not a send
    "DMARCPolicy": (100009, "bounce_soft"),  # rejected for the sender's DMARC policy
    "TemplateRenderingFailed": (100010, IGNORE),  # nothing was sent
}
_BY_CODE: Final = {code: name for name, (code, _) in BOUNCE_TYPES.items()}

#: ``SubscriptionChange.SuppressionReason`` values (Postmark's suppressions API). Only a manual
#: suppression (the recipient's unsubscribe link, or the sender on their request) is an
#: unsubscribe; the other two are counted by the Bounce / SpamComplaint webhook.
SUPPRESSION_REASONS: Final[Mapping[str, str]] = {
    "ManualSuppression": "unsubscribe",
    "HardBounce": IGNORE,
    "SpamComplaint": IGNORE,
}

_TS = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}
#: Keys only Postmark's inbound-mail webhook body has (it has no ``RecordType``).
_INBOUND_KEYS = ("FromFull", "OriginalRecipient", "MailboxHash")


def detect(value: Any) -> bool:
    """A Postmark webhook body (``RecordType``, the legacy bounce shape, or an inbound mail)."""
    if not isinstance(value, dict):
        return False
    if "RecordType" in value or ("MessageID" in value and "BouncedAt" in value):
        return True
    return _is_inbound(value)


def _is_inbound(value: dict) -> bool:
    return "MessageID" in value and all(k in value for k in _INBOUND_KEYS)


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """Each body is one record."""
    yield value, Context()


def bounce_type(record: dict) -> tuple[str, str]:
    """A bounce body's Postmark type name and its canonical outcome (see :data:`BOUNCE_TYPES`).

    Told by ``Type``, or by ``TypeCode`` when the type is missing; a record whose two disagree,
    or whose type is not in Postmark's table, is an error naming what it says.
    """
    name, code = text(record.get("Type")), record.get("TypeCode")
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    by_code = _BY_CODE.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    if not name:
        if by_code is None:
            raise RecordError(
                f"postmark bounce without a Type and with an unknown TypeCode {code!r}"
            )
        name = by_code
    if name not in BOUNCE_TYPES:
        raise RecordError(
            f"unmapped postmark bounce type {name!r}: not in Postmark's published bounce types"
        )
    if code is not None and by_code != name:
        raise RecordError(f"postmark bounce Type {name!r} disagrees with its TypeCode {code!r}")
    return name, BOUNCE_TYPES[name][1]


def _outcome(kind: str | None, record: dict) -> tuple[str, str | None]:
    """Canonical event type and bounce class of a record of ``RecordType`` ``kind``."""
    if kind == "Delivery":
        return "delivered", None
    if kind in ("Open", "Click"):
        return kind.lower(), None
    if kind == "SpamComplaint":
        return "complaint", text(record.get("Type")) or None
    if kind == "Bounce":
        name, outcome = bounce_type(record)
        if outcome == IGNORE:
            raise IgnoredTypeError(NAME, f"Bounce/{name}")
        if outcome == UNCLASSIFIED:
            raise RecordError(
                f"unclassified postmark bounce (Type {name!r}): Postmark could not classify it, "
                "so it is counted neither as a hard nor as a soft bounce"
            )
        return outcome, name
    if kind == "SubscriptionChange":
        return _subscription_change(record), None
    raise RecordError(f"unmapped postmark record type {kind!r}")


def _subscription_change(record: dict) -> str:
    """``unsubscribe`` for a manual suppression; ignored for the rest (see module docstring)."""
    suppress = record.get("SuppressSending")
    if suppress is False:
        raise IgnoredTypeError(NAME, "SubscriptionChange/reactivation")  # not an outcome
    if suppress is not True:
        raise RecordError(f"postmark SubscriptionChange with SuppressSending {suppress!r}")
    reason = text(record.get("SuppressionReason"))
    outcome = SUPPRESSION_REASONS.get(reason or "")
    if outcome is None:
        raise RecordError(f"unmapped postmark SuppressionReason {reason!r}")
    if outcome == IGNORE:
        raise IgnoredTypeError(NAME, f"SubscriptionChange/{reason}")
    return outcome


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per Postmark webhook body (none for inbound mail: ignored)."""
    if not isinstance(record, dict):
        raise RecordError("not a Postmark webhook object")
    kind = text(record.get("RecordType")) or ("Bounce" if "BouncedAt" in record else None)
    if kind is None and _is_inbound(record):
        raise IgnoredTypeError(NAME, "Inbound")  # a received mail, not a tracking event
    event_type, bounce_class = _outcome(kind, record)
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
            ts=to_utc(record.get(_TS[str(kind)])),
            address=text(record.get("Recipient") or record.get("Email")),
            message_id=text(record.get("MessageID")),
            # issue 28: the Tag names the campaign unless it names the variant (variant_map);
            # MessageStream is left out: "outbound" is every mail of the server, not a campaign
            campaign_id=text(metadata.get("campaign_id"))
            or (None if text(record.get("Tag")) in config.variant_map else text(record.get("Tag"))),
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
