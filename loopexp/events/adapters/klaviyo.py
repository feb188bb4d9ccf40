"""Klaviyo Events API pages (JSON:API): ``{"data": [event...], "included": [metric, profile...]}``.

``id`` is the event id; ``attributes.timestamp`` Unix seconds (``datetime`` ISO 8601 as fallback);
the metric's name (from ``included``, or ``event_properties``) gives the type; the address is the
included profile's ``email`` (fetch with ``include=profile,metric``) or ``$email`` in the event
properties. Property names for machine opens / bot clicks (``Apple Privacy Open``, ``Machine Open``,
``Bot Click``) are not confirmed by Klaviyo's published schema: read when present.
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
    flag,
    resolve_variant,
    row,
    text,
    to_utc,
)
from loopexp.events.adapters.registry import Adapter, register
from loopexp.events.config import IngestConfig

NAME = "klaviyo"

_TYPES = {
    "Received Email": "delivered",
    "Opened Email": "open",
    "Clicked Email": "click",
    "Bounced Email": "bounce_hard",
    "Marked Email as Spam": "complaint",
    "Unsubscribed": "unsubscribe",
    "Unsubscribed from Email Marketing": "unsubscribe",
    "Placed Order": "order",
}
#: Documented email metrics that are not an outcome of a delivered send (Klaviyo skipped the
#: send, e.g. a suppressed profile): ignored, not errors.
IGNORED: frozenset[str] = frozenset({"Dropped Email"})


def detect(value: Any) -> bool:
    """A JSON:API page of events, or one event resource."""
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        first = value["data"][0] if value["data"] else {}
        return isinstance(first, dict) and first.get("type") == "event"
    return isinstance(value, dict) and value.get("type") == "event" and "attributes" in value


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """One record per event of a page, with the page's metric names and profile addresses."""
    if not (isinstance(value, dict) and isinstance(value.get("data"), list)):
        yield value, Context()
        return
    metrics, emails = {}, {}
    for item in value.get("included") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "metric":
            metrics[item.get("id")] = dig(item, "attributes", "name")
        elif item.get("type") == "profile":
            emails[item.get("id")] = dig(item, "attributes", "email")
    ctx = Context({"metrics": metrics, "emails": emails})
    for event in value["data"]:
        yield event, ctx


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per Klaviyo event."""
    if not isinstance(record, dict) or not isinstance(record.get("attributes"), dict):
        raise RecordError("not a Klaviyo event resource")
    attrs = record["attributes"]
    props = attrs.get("event_properties") if isinstance(attrs.get("event_properties"), dict) else {}
    metric_id = dig(record, "relationships", "metric", "data", "id")
    profile_id = dig(record, "relationships", "profile", "data", "id")
    name = (
        ctx.lookups.get("metrics", {}).get(metric_id) or props.get("metric") or attrs.get("metric")
    )
    if name in IGNORED:
        raise IgnoredTypeError(NAME, name)
    if name not in _TYPES:
        raise RecordError(f"unmapped klaviyo metric {name!r}")
    event_type = _TYPES[name]
    if event_type == "bounce_hard" and "soft" in str(props.get("Bounce Type", "")).lower():
        event_type = "bounce_soft"
    address = ctx.lookups.get("emails", {}).get(profile_id) or props.get("$email")
    machine = None
    if event_type == "open":
        machine = flag(props.get("Machine Open"))
        machine = machine or flag(props.get("Apple Privacy Open"))
    bot = flag(props.get("Bot Click")) if event_type == "click" else None
    timestamp = (
        attrs.get("timestamp") if attrs.get("timestamp") is not None else attrs.get("datetime")
    )
    revenue = props.get("$value") if event_type == "order" else None
    return [
        row(
            event_id=text(record.get("id")),
            id_basis=canonical_json(record),
            event_type=event_type,
            ts=to_utc(timestamp),
            address=text(address),
            message_id=text(props.get("$message")),
            campaign_id=text(props.get("Campaign Name") or props.get("$flow")),
            variant_id=resolve_variant(props.get(config.variant_field), config),
            url=text(props.get("URL")),
            user_agent=text(props.get("Client Name") or props.get("User Agent")),
            is_machine_open=machine,
            is_bot_click=bot,
            bot_reason="provider_flag" if machine or bot else None,
            revenue=float(revenue) if isinstance(revenue, int | float) else None,
            currency=text(props.get("$currency_code")),
            flow_id=text(props.get("$flow")),  # a flow message: its flow and message ids
            step_id=text(props.get("$message")) if props.get("$flow") else None,
        )
    ]


class KlaviyoAdapter(Adapter):
    """Klaviyo Events API pages."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None}
    detect = staticmethod(detect)
    expand = staticmethod(expand)
    normalize = staticmethod(normalize)


register(KlaviyoAdapter())
