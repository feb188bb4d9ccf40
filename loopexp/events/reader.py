"""Splitting an export file into records without losing any: what cannot be parsed is a record too.

A *unit* is one top-level JSON value (an element of an array, a line of NDJSON, or a whole
document) with its raw text, or the raw text of what could not be parsed with the reason. Invalid
UTF-8 is caught per unit, so one badly encoded line does not take the file down with it.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopexp.core.errors import InputError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

NOT_UTF8 = "not valid UTF-8 (re-export the file as UTF-8)"

#: Suffixes of the files the generic reader splits into records.
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
JSON_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz", ".txt")


class IngestError(InputError):
    """An export that cannot be read at all: which file, what is wrong, what to do."""


@dataclass(frozen=True)
class Unit:
    """One top-level record of a file: its raw text and parsed value, or why it failed."""

    raw: str
    value: Any = None
    reason: str | None = None


def has_bom(path: Path) -> bool:
    """True when the file starts with a UTF-8 or UTF-16 byte-order mark."""
    with path.open("rb") as f:
        head = f.read(4)
    return any(head.startswith(bom) for bom, _ in _BOMS)


def read_text(path: Path) -> str:
    """The file's text; undecodable bytes kept as surrogates (caught per unit by ``clean``)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="surrogateescape" if codec != "utf-16" else "replace")
    return data.decode("utf-8", errors="surrogateescape")


def read_head(path: Path, n_bytes: int) -> str:
    """The first ``n_bytes`` of a plain file as text (a split character at the end dropped)."""
    with path.open("rb") as f:
        data = f.read(n_bytes)
    return data.decode("utf-8", errors="surrogateescape")


def clean(raw: str) -> tuple[str, bool]:
    """``raw`` made safe to store (bad bytes as backslash escapes) and whether it was UTF-8."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        fixed = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        # lone surrogates that did not come from bytes (e.g. "\ud800" escapes) stay unencodable
        return fixed.encode("utf-8", "backslashreplace").decode("utf-8"), False
    return raw, True


def _unit(raw: str, value: Any = None, reason: str | None = None) -> Unit:
    safe, ok = clean(raw)
    if not ok:
        return Unit(safe, None, NOT_UTF8)
    if reason is None and _has_bad_surrogate(value):
        return Unit(safe, None, "JSON string with an unpaired surrogate escape")
    return Unit(safe, value, reason)


def _has_bad_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_bad_surrogate(k) or _has_bad_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_bad_surrogate(v) for v in value)
    return False


def _loads(raw: str) -> tuple[Any, str | None]:
    try:
        return json.loads(raw), None
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:
        return None, f"unparseable JSON ({exc.msg} at char {exc.pos})"


def shape_of(text: str) -> str:
    """``array``, ``ndjson`` or ``document`` (one JSON value spread over several lines)."""
    head = text.lstrip()
    if head.startswith("["):
        return "array"
    first, _, rest = head.partition("\n")
    if not rest.strip():
        return "ndjson"
    _, reason = _loads(first)
    return "ndjson" if reason is None else "document"


def json_units(text: str) -> Iterator[Unit]:
    """Every record of a JSON array, NDJSON or single-document text, parseable or not."""
    shape = shape_of(text)
    if shape == "array":
        yield from _array_units(text)
    elif shape == "document":
        value, reason = _loads(text)
        if reason is None:
            yield _unit(text.strip(), value)
        else:  # perhaps NDJSON after all, with a bad first line
            yield from _line_units(text)
    else:
        yield from _line_units(text)


def _line_units(text: str) -> Iterator[Unit]:
    for full_line in _lines(text):
        line = full_line.rstrip("\r")
        if not line.strip():
            continue
        value, reason = _loads(line)
        yield _unit(line, value, reason)


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (as splitting on newlines gives them), one at a time.

    No list of every line: a large export is then not held twice.
    """
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def _array_units(text: str) -> Iterator[Unit]:
    """Elements of a JSON array; a truncated or broken tail becomes one quarantined unit."""
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    n = len(text)

    def skip(j: int) -> int:
        while j < n and text[j] in " \t\r\n":
            j += 1
        return j

    i = skip(i)
    if i < n and text[i] == "]":
        i = skip(i + 1)
        if i < n:
            yield _unit(text[i:], reason="text after the end of the JSON array")
        return
    while i < n:
        try:
            value, end = decoder.raw_decode(text, i)
        except RecursionError:
            yield _unit(text[i:], reason="JSON nested too deeply")
            return
        except ValueError as exc:
            yield _unit(
                text[i:],
                reason=f"unparseable JSON array element ({exc.msg}); "
                "this and the rest of the array",
            )
            return
        yield _unit(text[i:end], value)
        i = skip(end)
        if i < n and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < n and text[i] == "]":
            i = skip(i + 1)
            if i < n:
                yield _unit(text[i:], reason="text after the end of the JSON array")
            return
        yield _unit(text[i:] or "", reason="truncated JSON array (no closing ']')")
        return
    yield _unit("", reason="truncated JSON array (no closing ']')")


def csv_header(text: str) -> list[str]:
    """The header row of a CSV text."""
    first = next(csv.reader(io.StringIO(text)), [])
    return [h.strip() for h in first]


def csv_units(text: str) -> Iterator[Unit]:
    """One unit per data row of a CSV text: a dict keyed by the normalised header."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [normalise_header(h) for h in next(reader, [])]
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        raw = ",".join(cells)
        if len(cells) != len(header):
            yield _unit(raw, reason=f"CSV row with {len(cells)} fields, header has {len(header)}")
            continue
        yield _unit(raw, dict(zip(header, cells, strict=True)))


def normalise_header(name: str) -> str:
    """``Email Address`` → ``email_address``: header case and spacing do not matter."""
    return name.strip().lstrip("\ufeff").lower().replace(" ", "_").replace("-", "_")
