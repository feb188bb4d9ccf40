"""Each provider's webhooks as the raw log sees them: records of a body, retry windows.

The receiver (``loopexp collect``) stores each request's body as it came; ingest splits it here
into the records the provider's adapter reads, and the completeness report asks how long each
provider may still deliver an hour's events. Kept in ``adapters/`` so provider knowledge stays
beside the adapters (the raw log and ingest name no provider).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

#: Providers whose webhooks the receiver takes; each one's ingest format has the same name.
PROVIDERS: tuple[str, ...] = ("sendgrid", "mailgun", "ses", "postmark", "mandrill", "klaviyo")

#: Hours each provider retries a failed delivery (shared/reference/webhooks.md): SNS ≤ 1 h (its
#: hard limit), Mailgun 8 h (never for ``delivered``), Postmark ~10.5 h, SendGrid 24 h after the
#: event. Mandrill's and Klaviyo's schedules are not documented: :data:`ASSUMED_RETRY_HOURS`.
RETRY_HOURS: dict[str, float] = {"ses": 1.0, "mailgun": 8.0, "postmark": 10.5, "sendgrid": 24.0}
ASSUMED_RETRY_HOURS = 24.0


def retry_hours(provider: str) -> float:
    """How long after an event the provider may still deliver it (hours)."""
    return RETRY_HOURS.get(provider, ASSUMED_RETRY_HOURS)


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _unparsed(body: bytes) -> str:
    # One line per record in the exploded file: an unparseable body's line breaks are escaped
    # (the segment keeps the exact bytes); the line stays unparseable, so ingest quarantines it.
    return body.decode("utf-8", "surrogateescape").replace("\r", "\\r").replace("\n", "\\n")


def records(provider: str, body: bytes) -> list[str]:
    """A webhook body as the provider's export records, one JSON text each (ingest's input).

    SendGrid and Mandrill batch events (a JSON array; Mandrill's in the ``mandrill_events`` form
    field), Klaviyo's system webhook wraps each event's ``payload`` in ``data[]``; Mailgun,
    Postmark and SNS send one object per request. A body that cannot be parsed is one record, kept
    as it came, for ingest to quarantine.
    """
    try:
        if provider == "mandrill":
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            value = json.loads(form["mandrill_events"])
        else:
            value = json.loads(body)
    except (ValueError, KeyError):
        return [_unparsed(body)]
    if provider in ("sendgrid", "mandrill") and isinstance(value, list):
        return [_line(v) for v in value]
    if provider == "klaviyo" and isinstance(value, dict) and isinstance(value.get("data"), list):
        return [
            _line(item.get("payload", item) if isinstance(item, dict) else item)
            for item in value["data"]
        ]
    return [_line(value)]
