"""Mailchimp: ``GET /reports/{campaign_id}/email-activity`` pages, and the same as a CSV table.

An email-activity page holds ``emails[]``, each with an address and its ``activity[]`` (``open``,
``click``, ``bounce``); every activity item is one input record. There is no event id: the id is a
content hash of (campaign, address, action, timestamp, url). Mailchimp's per-open proxy flag lives
only in ``/open-details``, so Apple proxy opens are found by the heuristics. The variant is the
member's ``absplit_group`` (from ``/sent-to``) when the export carries it.

The CSV form (Mailchimp's own CSV export columns are not published) is one row per activity with
columns ``email_address`` (or ``Email Address``), ``action``, ``timestamp`` and optionally ``url``,
``ip``, ``type``, ``campaign_id``, ``absplit_group``; header case and spaces do not matter.
``/open-details`` members (``opens[]`` with ``is_proxy_open``) and ``/unsubscribed`` pages are read
too. A ``/sent-to`` page gives the deliveries (status ``sent``; ``hard``/``soft`` are bounces) and
each member's ``absplit_group``; it has no time per member, so add the campaign's ``send_time``
(from ``/reports/{campaign_id}``) to the page, or its members are quarantined for lack of one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from loopexp.events.adapters.base import (
    Context,
    RecordError,
    canonical_json,
    flag,
    resolve_variant,
    row,
    text,
    to_utc,
)
from loopexp.events.adapters.registry import CSV, JSON, Adapter, register
from loopexp.events.config import IngestConfig
from loopexp.events.reader import IngestError

NAME = "mailchimp"

_TYPES = {
    "open": "open",
    "click": "click",
    "sent": "send",
    "delivered": "delivered",
    "unsub": "unsubscribe",
}
CSV_COLUMNS = {"email_address", "action", "timestamp"}
#: ``/sent-to`` member status → action: "sent" means accepted by the receiving server.
_SENT_STATUS = {"sent": "delivered", "hard": "bounce", "soft": "bounce"}


def detect(value: Any) -> bool:
    """An email-activity, open-details or unsubscribed page, or one member object of them."""
    if not isinstance(value, dict):
        return False
    if any(isinstance(value.get(k), list) for k in ("emails", "unsubscribes", "sent_to")):
        return True
    if isinstance(value.get("members"), list) and "campaign_id" in value:
        return True
    return "email_address" in value and ("activity" in value or "opens" in value)


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """One record per activity item (or open, or unsubscribe), with its member's fields.

    Opens from ``/open-details`` carry Mailchimp's own ``is_proxy_open`` flag.
    """
    if isinstance(value, dict) and isinstance(value.get("unsubscribes"), list):
        for item in value["unsubscribes"]:
            yield (dict(item, action="unsub") if isinstance(item, dict) else item), Context()
        return
    if isinstance(value, dict) and isinstance(value.get("sent_to"), list):
        for item in value["sent_to"]:
            if isinstance(item, dict):
                status = _SENT_STATUS.get(str(item.get("status")), item.get("status"))
                item = dict(item, action=status, type=item.get("status"))  # noqa: PLW2901
                item.setdefault("timestamp", value.get("send_time"))
            yield item, Context()
        return
    members = [value]
    if isinstance(value, dict):
        for page_key in ("emails", "members"):
            if isinstance(value.get(page_key), list):
                members = value[page_key]
    for member in members:
        items_key = "opens" if isinstance(member, dict) and "opens" in member else "activity"
        if not isinstance(member, dict) or not isinstance(member.get(items_key), list):
            yield member, Context()  # normalize quarantines it with the reason
            continue
        context = {k: member.get(k) for k in ("email_address", "campaign_id", "absplit_group")}
        for item in member[items_key]:
            is_open = items_key == "opens" and isinstance(item, dict)
            yield (dict(item, action="open") if is_open else item), Context({"member": context})


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per activity item (JSON) or CSV row."""
    if not isinstance(record, dict):
        raise RecordError("not a Mailchimp activity object")
    member = ctx.lookups.get("member")
    if member is None:  # a CSV row or unsubscribe: the member's fields are on the record itself
        if "activity" in record or "opens" in record:
            raise RecordError("Mailchimp member without an activity list")
        member = record
    action = text(record.get("action"))
    if action == "bounce":
        soft = text(record.get("type")) == "soft"
        event_type = "bounce_soft" if soft else "bounce_hard"
    elif action in _TYPES:
        event_type = _TYPES[action]
    else:
        raise RecordError(f"unmapped mailchimp action {action!r}")
    basis = {
        "campaign": member.get("campaign_id"),
        "email": member.get("email_address"),
        "action": action,
        "timestamp": record.get("timestamp"),
        "url": record.get("url"),
    }
    return [
        row(
            event_id=None,
            id_basis=canonical_json(basis),
            event_type=event_type,
            ts=to_utc(record.get("timestamp")),
            address=text(member.get("email_address")),
            campaign_id=text(member.get("campaign_id")),
            variant_id=resolve_variant(
                member.get(config.variant_field) or member.get("absplit_group"), config
            ),
            url=text(record.get("url")) or None,
            ip=text(record.get("ip")) or None,
            bounce_class=text(record.get("type")) or None if action == "bounce" else None,
            is_machine_open=flag(record.get("is_proxy_open")) if action == "open" else None,
            bot_reason="provider_flag"
            if action == "open" and flag(record.get("is_proxy_open"))
            else None,
        )
    ]


class MailchimpAdapter(Adapter):
    """Mailchimp report pages (JSON) and activity tables (CSV)."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None, "mailchimp-csv": CSV}
    reads = frozenset({JSON, CSV})
    detect = staticmethod(detect)
    expand = staticmethod(expand)
    normalize = staticmethod(normalize)

    def detect_columns(self, columns: list[str], config: IngestConfig) -> bool:
        """An activity CSV: its columns, unless the spec maps a table's columns itself."""
        return set(columns) >= CSV_COLUMNS and not config.columns

    def table_context(self, path: Path, columns: list[str], config: IngestConfig) -> Context:
        """Nothing to look up; an error naming the activity columns the file lacks."""
        missing = sorted(CSV_COLUMNS - set(columns))
        if missing:
            raise IngestError(
                f"{path}: a Mailchimp activity CSV needs columns {sorted(CSV_COLUMNS)}; "
                f"missing {missing} (header: {columns})"
            )
        return Context()

    def table_format(self, kind: str, columns: list[str]) -> str:
        """Always ``mailchimp-csv``."""
        return "mailchimp-csv"


register(MailchimpAdapter())
