"""Braze Currents email events: the Custom HTTP connector's objects (or batches of them).

``id`` is the event id; ``time`` Unix seconds; ``properties.machine_open`` (the string ``"true"``)
marks machine opens and ``is_suspected_bot_click`` bot clicks; ``message_variation_id`` (or
``canvas_variation_id``) is the A/B arm, mapped to a spec variant through ``variant_map``. The flat
Avro records use the same field names at the top level and are read too.

Currents for data storage (S3 / GCS / Azure) writes one Avro object-container file per event
type and partition, e.g. ``.../event_type=users.messages.email.Open/date=2026-11-26-10/...avro``.
Its records are flat (the fields of the Custom HTTP connector's ``properties`` at the top level)
and carry no ``event_type`` field: the type is the ``event_type=`` folder or the writer schema's
full name (``dataexport.S3.inner.users.messages.email.Open``). Each record becomes a
:class:`loopexp.events.reader.Unit` with that type added. A file whose type cannot be told, or
whose blocks are corrupt, is never dropped: its records (or what is left of the file) become
quarantined units with the reason. A file cut exactly at a block boundary reads as a valid
shorter file: the container format carries no record count to check it against.

fastavro reads the files: DuckDB's ``avro`` extension would be downloaded at run time, which a
locked-down scheduler cannot do, and pyarrow has no Avro reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

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
from loopexp.events.adapters.registry import Adapter, register
from loopexp.events.config import IngestConfig
from loopexp.events.reader import Unit

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

AVRO_SUFFIXES = (".avro",)
_FOLDER_TYPE = re.compile(r"event_type=([A-Za-z0-9_.]+)")


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
            flow_id=text(props.get("canvas_id")),  # a Canvas step: the canvas and its step
            step_id=text(props.get("canvas_step_id")),
        )
    ]


def event_type_of(schema_name: str | None, path: Path) -> str | None:
    """``users.messages.email.<Type>`` from the ``event_type=`` folder, else the schema's name.

    The folder comes first: it is how Currents partitions the export and how a team re-files
    events by hand; the writer schema's full name (``dataexport.S3.inner.`` + the type) agrees
    with it in Currents' own files.
    """
    for part in reversed(path.parts):
        match = _FOLDER_TYPE.fullmatch(part)
        if match and match.group(1).startswith(PREFIX):
            return match.group(1)
    name = schema_name or ""
    at = name.find(PREFIX)
    return name[at:] if at >= 0 else None


def _raw(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)


def avro_units(path: Path) -> Iterator[Unit]:
    """One unit per record of a Braze Currents Avro file (a quarantined unit where it breaks)."""
    import fastavro  # noqa: PLC0415 (only when an Avro file is read)

    with path.open("rb") as handle:
        try:
            records = fastavro.reader(handle)
        except Exception as exc:  # fastavro raises many types on a bad header: all unreadable
            yield Unit(raw="", reason=f"not a readable Avro file ({type(exc).__name__}: {exc})")
            return
        schema = records.writer_schema if isinstance(records.writer_schema, dict) else {}
        name = str(schema.get("name", ""))
        if "." not in name and schema.get("namespace"):
            name = f"{schema['namespace']}.{name}"
        event_type = event_type_of(name, path)
        read = 0
        try:
            for record in records:
                read += 1
                if not isinstance(record, dict):
                    yield Unit(raw=_raw(record), reason="Avro record is not a record (a map)")
                elif event_type is None:
                    yield Unit(
                        raw=_raw(record),
                        reason=(
                            f"Avro file's event type unknown (schema {name or '?'!r}, no "
                            "event_type= folder); keep Currents' folder layout or pass the "
                            "files of one type from a folder named event_type=<type>"
                        ),
                    )
                else:
                    yield Unit(raw=_raw(record), value={**record, "event_type": event_type})
        # fastavro's decoder raises what the damage provokes (EOFError, ValueError, IndexError
        # from a union index, zlib.error from a deflate block, UnicodeDecodeError, ...): each is
        # a corrupt file, whose remainder is quarantined, never a crash.
        except Exception as exc:
            yield Unit(
                raw=f"<{path.name}: the rest of the file after record {read}>",
                reason=f"corrupt Avro block after record {read} ({type(exc).__name__}: {exc})",
            )


class BrazeAdapter(Adapter):
    """Braze Currents: Custom HTTP connector objects (JSON) and storage exports (Avro)."""

    name = NAME
    formats: ClassVar[Mapping[str, str | None]] = {NAME: None}
    own_suffixes = AVRO_SUFFIXES
    own_files = "a Braze Currents export"
    detect = staticmethod(detect)
    expand = staticmethod(expand)
    normalize = staticmethod(normalize)
    read_units = staticmethod(avro_units)


register(BrazeAdapter())
