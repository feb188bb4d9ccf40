"""The canonical event table every ESP adapter writes and the metrics engine reads.

One row per event. ``(provider, event_id)`` is unique; ``recipient_key`` is the hashed address or id
the assignment uses. Flags are three-valued: true, false, or null when the provider does not say.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

#: Event times outside [TS_MIN, TS_MAX) are bad data (a unit mistake, a zero, a typo), not events:
#: every adapter and both engines quarantine them, from these two values.
TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)

EVENT_TYPES: tuple[str, ...] = (
    "send",
    "delivered",
    "deferred",
    "bounce_hard",
    "bounce_soft",
    "open",
    "click",
    "unsubscribe",
    "complaint",
    "order",
)

#: Canonical columns and their Arrow types, in order.
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("provider", pa.string()),
        ("event_type", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("recipient_key", pa.string()),
        ("message_id", pa.string()),
        ("campaign_id", pa.string()),
        ("variant_id", pa.string()),
        ("url", pa.string()),
        ("user_agent", pa.string()),
        ("ip", pa.string()),
        ("is_machine_open", pa.bool_()),
        ("is_bot_click", pa.bool_()),
        ("bot_reason", pa.string()),
        ("bounce_class", pa.string()),
        ("revenue", pa.float64()),
        ("currency", pa.string()),
        # Automation flows (issue 26), optional: the provider's flow / canvas id and the step
        # (message) of the flow the event belongs to; null for a one-off campaign.
        ("flow_id", pa.string()),
        ("step_id", pa.string()),
    ]
)

#: The optional flow columns (issue 26): adapters that do not stage them write them as null.
FLOW_COLUMNS: tuple[str, ...] = ("flow_id", "step_id")

#: Columns without which an event cannot be used at all.
REQUIRED_COLUMNS: tuple[str, ...] = ("event_id", "provider", "event_type", "ts", "recipient_key")
