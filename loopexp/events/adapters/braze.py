"""Braze Currents email events: the Custom HTTP connector's objects (or batches of them).

``id`` is the event id; ``time`` Unix seconds; ``properties.machine_open`` (the string ``"true"``)
marks machine opens and ``is_suspected_bot_click`` bot clicks; ``message_variation_id`` (or
``canvas_variation_id``) is the A/B arm, mapped to a spec variant through ``variant_map``. The flat
Avro records use the same field names at the top level and are read too.
"""

from __future__ import annotations

from collections.abc import Iterator
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

NAME = "braze"
PREFIX = "users.messages.email."

_TYPES = {
    "Send": "send",
    "Delivery": "delivered",
    "Open": "open",
    "Click": "click",
    "Bounce": "bounce_hard",
    "SoftBounce": "bounce_soft",
    "MarkAsSpam": "complaint",
    "Unsubscribe": "unsubscribe",
    "Deferral": "deferred",
}
#: Documented email events that are not an outcome of a delivered send (an aborted send, a
#: retry of a deferral): ignored, not errors.
IGNORED: frozenset[str] = frozenset({"Abort", "Retry"})


def detect(value: Any) -> bool:
    """A Currents event (``event_type`` ``users.messages.email.*``) or an ``events`` batch."""
    if isinstance(value, dict) and isinstance(value.get("events"), list) and value["events"]:
        value = value["events"][0]
    return isinstance(value, dict) and str(value.get("event_type", "")).startswith(PREFIX)


def expand(value: Any) -> Iterator[tuple[Any, Context]]:
    """One record per event, also out of a ``{"events": [...]}`` batch."""
    if isinstance(value, dict) and isinstance(value.get("events"), list):
        for event in value["events"]:
            yield event, Context()
    else:
        yield value, Context()


def normalize(record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
    """One staged row per Braze email event."""
    if not isinstance(record, dict):
        raise RecordError("not a Braze Currents event object")
    kind = str(record.get("event_type", "")).removeprefix(PREFIX)
    if kind in IGNORED:
        raise IgnoredTypeError(NAME, kind)
    if kind not in _TYPES:
        raise RecordError(f"unmapped braze event type {record.get('event_type')!r}")
    event_type = _TYPES[kind]
    props = record.get("properties") if isinstance(record.get("properties"), dict) else record
    machine = flag(props.get("machine_open")) if event_type == "open" else None
    bot = flag(props.get("is_suspected_bot_click")) if event_type == "click" else None
    variation = props.get("message_variation_id") or props.get("canvas_variation_id")
    return [
        row(
            event_id=text(record.get("id")),
            id_basis=canonical_json(record),
            event_type=event_type,
            ts=to_utc(record.get("time")),
            address=text(props.get("email_address")),
            message_id=text(props.get("dispatch_id") or props.get("send_id")),
            campaign_id=text(props.get("campaign_id") or props.get("canvas_id")),
            variant_id=resolve_variant(variation, config),
            url=text(props.get("url")),
            user_agent=text(props.get("user_agent")),
            ip=text(props.get("ip")),
            is_machine_open=machine,
            is_bot_click=bot,
            bot_reason="provider_flag" if machine or bot else None,
            bounce_class=text(props.get("bounce_reason")),
        )
    ]
