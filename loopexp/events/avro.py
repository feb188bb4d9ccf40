"""Braze Currents Avro files (the S3 / GCS / Azure export) split into records without losing any.

Currents for data storage writes one Avro object-container file per event type and partition,
e.g. ``.../event_type=users.messages.email.Open/date=2026-11-26-10/...avro``. Its records are flat
(the fields of the Custom HTTP connector's ``properties`` at the top level) and carry no
``event_type`` field: the type is the writer schema's full name
(``dataexport.S3.inner.users.messages.email.Open``) or, failing that, the ``event_type=`` folder.
Each record becomes a :class:`loopexp.events.reader.Unit` with that type added, for the Braze
adapter. A file whose type cannot be told, or whose blocks are corrupt, is never dropped: its
records (or what is left of the file) become quarantined units with the reason. A file cut
exactly at a block boundary reads as a valid shorter file: the container format carries no
record count to check it against.

fastavro reads the files: DuckDB's ``avro`` extension would be downloaded at run time, which a
locked-down scheduler cannot do, and pyarrow has no Avro reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro

from loopexp.events.adapters.braze import PREFIX
from loopexp.events.reader import Unit

AVRO_SUFFIXES = (".avro",)
_FOLDER_TYPE = re.compile(r"event_type=([A-Za-z0-9_.]+)")


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
