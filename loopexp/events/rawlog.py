r"""The webhook receiver's raw log: its segment format, and reading sealed segments for ingest.

``loopexp collect`` (``loopexp.collect``) appends every verified webhook request to a *segment*
before it answers; ingest reads the sealed ones here, through the same adapters as exports. The
format lives in this (earlier) stage so the writer and the reader share one definition.

A segment is a sequence of records, each ``<meta JSON>\n<body bytes>\n`` where the meta holds the
provider (``p``), receive time in Unix seconds (``t``), the headers needed to verify the request
again (``h``), the body's length (``n``) and CRC-32 (``c``). Length and CRC find a torn tail (a
record cut by a crash before its fsync, so never acknowledged): reading stops there. An open
segment is named ``<instance>-<start>-<seq>.wlog.open``; sealing renames it atomically to
``….wlog``, and only ``.wlog`` files are read. Our own framing (not JSON lines) because the body is
stored byte for byte: a body that is not valid JSON or UTF-8 is kept as it came, to be
quarantined at ingest rather than lost. How a body splits into records is each provider's
(``adapters/webhooks.py``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from loopexp.events.adapters import webhooks

SEALED = ".wlog"
OPEN = ".wlog.open"


@dataclass(frozen=True)
class Record:
    """One stored webhook request."""

    provider: str
    received: float
    headers: dict[str, str]
    body: bytes


def encode(provider: str, received: float, headers: Mapping[str, str], body: bytes) -> bytes:
    """A record's bytes, as appended to a segment."""
    meta = {
        "p": provider,
        "t": round(received, 6),
        "h": dict(headers),
        "n": len(body),
        "c": zlib.crc32(body),
    }
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + body + b"\n"


def scan(data: bytes) -> tuple[list[Record], int]:
    """The whole records at the start of ``data`` and the offset where they end (a torn tail)."""
    records: list[Record] = []
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        try:
            meta = json.loads(data[pos:nl])
            n = int(meta["n"])
            body = data[nl + 1 : nl + 1 + n]
            whole = len(body) == n and data[nl + 1 + n : nl + 2 + n] == b"\n"
            if not whole or zlib.crc32(body) != int(meta["c"]):
                break
            records.append(Record(str(meta["p"]), float(meta["t"]), dict(meta["h"]), body))
        except (ValueError, KeyError, TypeError):
            break
        pos = nl + 2 + n
    return records, pos


def read_segment(path: Path) -> list[Record]:
    """The records of a segment file (a torn tail left out)."""
    return scan(path.read_bytes())[0]


def is_segment(path: Path) -> bool:
    """A sealed segment of the raw log."""
    return path.name.endswith(SEALED)


def explode(files: list[Path], folder: Path) -> tuple[list[Path], dict[Path, str], dict[Path, str]]:
    """Sealed segments among ``files`` as one NDJSON file per segment and provider.

    Returns the files to ingest (others unchanged, in order), the format each exploded file must
    be read as (its provider's, never detection: a file of only malformed bodies still belongs to
    its provider) and the segment each came from (for the report).
    """
    out: list[Path] = []
    forced: dict[Path, str] = {}
    origin: dict[Path, str] = {}
    for path in files:
        if not is_segment(path):
            out.append(path)
            continue
        lines: dict[str, list[str]] = {}
        for record in read_segment(path):
            lines.setdefault(record.provider, []).extend(
                webhooks.records(record.provider, record.body)
            )
        folder.mkdir(parents=True, exist_ok=True)
        for provider, texts in lines.items():
            target = folder / f"{path.name}.{provider}.ndjson"
            target.write_text("\n".join(texts) + "\n", encoding="utf-8", errors="surrogateescape")
            out.append(target)
            forced[target] = provider
            origin[target] = f"{path}#{provider}"
    return out, forced, origin


def iter_received(files: list[Path]) -> Iterator[tuple[str, float, bytes]]:
    """(provider, receive time, body) of every record of the sealed segments among ``files``."""
    for path in files:
        if is_segment(path):
            for record in read_segment(path):
                yield record.provider, record.received, record.body
