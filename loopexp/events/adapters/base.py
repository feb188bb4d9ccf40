"""What every adapter shares: the staged row, timestamp parsing, and small JSON helpers.

An adapter turns one provider record into zero or more *staged rows*: the canonical columns with the
raw address (hashed later, in bulk) and, when a record cannot be used, a ``quarantine_reason``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopexp.core.errors import InputError
from loopexp.events.config import IngestConfig
from loopexp.events.schema import TS_MAX, TS_MIN

#: Columns of the staged table (canonical columns plus what ingest needs on the way).
STAGE_FIELDS: tuple[str, ...] = (
    "provider",
    "event_id",
    "id_basis",
    "event_type",
    "ts",
    "address",
    "recipient_key",
    "message_id",
    "campaign_id",
    "variant_id",
    "url",
    "user_agent",
    "ip",
    "is_machine_open",
    "is_bot_click",
    "bot_reason",
    "bounce_class",
    "revenue",
    "currency",
    "flow_id",  # automation flows (issue 26): the provider's flow / canvas id, where sent
    "step_id",
    "quarantine_reason",
    "raw",
)


class RecordError(InputError):
    """A record that cannot become an event; the message is the quarantine reason."""


#: Quarantine reason prefix of records of a documented provider type that is not an outcome
#: (e.g. SendGrid ``dropped``): kept in the quarantine so nothing is lost, but counted apart as
#: ``ignored`` and not an error for ``--strict``.
IGNORED_TYPE = "ignored_type"


def ignored_reason(provider: str, kind: str) -> str:
    """The quarantine reason of a documented-but-not-an-outcome type: ``ignored_type: p:kind``."""
    return f"{IGNORED_TYPE}: {provider}:{kind}"


class IgnoredTypeError(RecordError):
    """A record of a documented provider type with no canonical event (not an error)."""

    def __init__(self, provider: str, kind: str) -> None:
        super().__init__(ignored_reason(provider, kind))


@dataclass
class Context:
    """Page-level information a record needs (e.g. Klaviyo's included metrics and profiles)."""

    lookups: dict[str, Any] = field(default_factory=dict)


def to_utc(value: Any) -> datetime:
    """Any provider timestamp as an aware UTC datetime, or :class:`RecordError`.

    Numbers (and numeric strings) are Unix time in seconds, milliseconds or microseconds, told
    apart by magnitude (SendGrid sends both seconds and milliseconds); strings are ISO 8601, with
    ``Z`` or an offset (an offset-less time is taken as UTC).
    """
    if value is None or value == "":
        raise RecordError("missing timestamp")
    if isinstance(value, bool):
        raise RecordError(f"unparseable timestamp {value!r}")
    if isinstance(value, datetime):
        ts = value if value.tzinfo else value.replace(tzinfo=UTC)
        return _in_range(ts.astimezone(UTC), value)
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise RecordError(f"unparseable timestamp {value[:40]!r}") from None
            ts = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            return _in_range(ts.astimezone(UTC), value)
    else:
        raise RecordError(f"unparseable timestamp of type {type(value).__name__}")
    if math.isnan(number) or math.isinf(number):
        raise RecordError(f"unparseable timestamp {value!r}")
    scale = 1e6 if abs(number) >= 1e14 else 1e3 if abs(number) >= 1e11 else 1.0
    try:
        ts = datetime.fromtimestamp(number / scale, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise RecordError(f"timestamp out of range {value!r}") from None
    return _in_range(ts, value)


def _in_range(ts: datetime, value: Any) -> datetime:
    if not TS_MIN <= ts < TS_MAX:
        raise RecordError(f"timestamp out of range {str(value)[:40]!r} (before 2000 or after 2100)")
    return ts


def dig(record: Any, *path: str) -> Any:
    """``record[path[0]][path[1]]...`` or None when any step is missing or not a mapping."""
    for key in path:
        if not isinstance(record, Mapping):
            return None
        record = record.get(key)
    return record


def first(value: Any) -> Any:
    """The first item of a list (a provider's tags), a lone value as it is, else None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def text(value: Any) -> str | None:
    """A scalar as a string (None stays None; lists and objects are not scalars)."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flag(value: Any) -> bool | None:
    """A provider's flag: booleans, ``"true"``/``"false"`` strings, or None when it says nothing."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in {"true", "1", "yes"}:
            return True
        if low in {"false", "0", "no"}:
            return False
    if isinstance(value, int | float):
        return bool(value)
    return None


def canonical_json(record: Any) -> str:
    """Stable JSON text of a record: the basis of a content-hash event id."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def resolve_variant(value: Any, config: IngestConfig) -> str | None:
    """A provider's variant label mapped through ``config.variant_map`` (unmapped labels kept)."""
    label = text(value)
    if label is None or label == "":
        return None
    return config.variant_map.get(label, label)


def row(**values: Any) -> dict[str, Any]:
    """A staged row; unknown keys are a programming error."""
    unknown = set(values) - set(STAGE_FIELDS)
    if unknown:
        raise KeyError(f"not staged columns: {sorted(unknown)}")
    return values


def expand_single(value: Any) -> Iterator[tuple[Any, Context]]:
    """The default page expansion: the value is one record."""
    yield value, Context()
