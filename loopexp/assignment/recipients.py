"""Recipient lists in: a CSV or Parquet file becomes one normalised table, nothing dropped.

The team's list has its own column names and segment labels; ``audience.columns`` and
``audience.segment_map`` in the spec say what is what. :func:`prepare_recipients` turns each input
row into one row of :data:`PREPARED_COLUMNS` — the recipient key (an id as is, or the keyed hash of
the e-mail address), the mapped lifecycle segment, consent, suppression and filter results — so
that :mod:`loopexp.assignment.assign` can account for every row (assigned or excluded with a
reason).
Problems that concern the whole file (a missing column, an unknown consent value, an unmapped
segment label) raise :class:`RecipientsError` naming the file, the column, the values and the fix.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loopexp.core.errors import InputError
from loopexp.core.keys import (
    EMAIL_PATTERN,
    HashKey,
    hash_address_array,
    hash_addresses,
    load_hash_key,
)
from loopexp.design.parts import Audience, Segment

#: Columns of the table :func:`prepare_recipients` returns (``email`` only when the list has one).
PREPARED_COLUMNS = (
    "row",
    "recipient_key",
    "email",
    "segment_label",
    "segment",
    "consent",
    "suppressed",
    "in_filters",
)

#: Text values read as true / false in consent and suppression columns (case-insensitive).
TRUE_VALUES = frozenset({"true", "t", "yes", "y", "1", "1.0", "x", "confirmed", "opted_in"})
FALSE_VALUES = frozenset({"false", "f", "no", "n", "0", "0.0", ""})


class RecipientsError(InputError):
    """A recipient list (or contact history) that cannot be used as it is, and what to do."""


def read_table(path: str | Path, what: str = "recipient list") -> pd.DataFrame:
    """Read a CSV (every column as text: ids keep their leading zeros) or Parquet file.

    Columns are Arrow-backed (``pd.ArrowDtype``): read in C and handed to the assignment without a
    Python object per value, which is most of the time at 10 M rows.
    """
    path = Path(path)
    if not path.exists():
        raise RecipientsError(f"{what} {path}: file not found")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path).to_pandas(types_mapper=pd.ArrowDtype)
        if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
            sep = "\t" if ".tsv" in suffixes else ","
            with open(path, encoding="utf-8-sig", newline="") as handle:
                header = next(csv.reader(handle, delimiter=sep), [])
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=sep),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
                ),
            )
            return table.to_pandas(types_mapper=pd.ArrowDtype)
    except Exception as exc:  # any reader error becomes one actionable message
        raise RecipientsError(f"{what} {path}: cannot be read ({exc})") from None
    raise RecipientsError(
        f"{what} {path}: unknown format {path.suffix!r}; give a .csv, .tsv or .parquet file"
    )


def read_recipients(path: str | Path) -> pd.DataFrame:
    """Read a recipient list from CSV or Parquet (see :func:`read_table`)."""
    return read_table(path, "recipient list")


def key_column(table: pd.DataFrame, audience: Audience) -> tuple[str, str]:
    """The column the key comes from and its kind (``id`` or ``email``)."""
    cols = audience.columns
    if cols.id:
        return cols.id, "id"
    if cols.email:
        return cols.email, "email"
    if "recipient_key" in table.columns:
        return "recipient_key", "id"
    if "email" in table.columns:
        return "email", "email"
    raise RecipientsError(
        "no key column: the list needs a `recipient_key` or `email` column, or name yours in the "
        "spec under audience.columns (id: <column> or email: <column>)"
    )


#: The lifecycle segments in code order (``segment_code`` indexes this; -1 is unmapped).
SEGMENT_ORDER = tuple(Segment)


@dataclass(frozen=True)
class PreparedRecipients:
    """The normalised columns of a recipient list, as Arrow and NumPy arrays (fast at 10 M rows)."""

    keys: pa.Array
    """Recipient keys (text; empty for a row without one)."""
    emails: pa.Array | None
    """Raw addresses as written, when the list has them (send lists only)."""
    labels: pa.Array
    """The team's segment labels, trimmed."""
    segment_code: np.ndarray
    """Index into :data:`SEGMENT_ORDER`, -1 for an unmapped label."""
    consent: np.ndarray
    suppressed: np.ndarray
    in_filters: np.ndarray
    key_kind: str
    """``id`` (keys as written) or ``email`` (keyed hashes of the addresses)."""

    def __len__(self) -> int:
        return len(self.keys)

    def segments(self) -> np.ndarray:
        """Lifecycle segment values per row (empty string when unmapped), as an object array."""
        values = np.array([s.value for s in SEGMENT_ORDER] + [""], dtype=object)
        return values[self.segment_code]  # -1 picks the trailing ""


def prepare_recipients(
    table: pd.DataFrame,
    audience: Audience,
    key: HashKey | None = None,
    source: str = "recipient list",
) -> pd.DataFrame:
    """One normalised row per input row (:data:`PREPARED_COLUMNS`), in input order.

    ``row`` is the 1-based data row of the input (the header is not counted). ``recipient_key``
    is empty for a row without a key (or with an "address" that has no ``@``). ``segment`` is the
    lifecycle segment or empty when the label is unmapped; with ``audience.unmapped_segments:
    error`` an unmapped label raises instead. ``key`` is needed only when the key is hashed from
    e-mail addresses (see :func:`loopexp.core.keys.load_hash_key`); without one, that function's
    error
    says how to set one.
    """
    prepared = prepare_arrays(table, audience, key, source)
    out = {
        "row": np.arange(1, len(prepared) + 1, dtype=np.int64),
        "recipient_key": prepared.keys.to_pylist(),
        "email": prepared.emails.to_pylist() if prepared.emails is not None else None,
        "segment_label": prepared.labels.to_pylist(),
        "segment": prepared.segments(),
        "consent": prepared.consent,
        "suppressed": prepared.suppressed,
        "in_filters": prepared.in_filters,
    }
    return pd.DataFrame({k: v for k, v in out.items() if v is not None})


class RecipientKeys(NamedTuple):
    """Each row's recipient key, the raw addresses when the list has them, and the key's kind."""

    keys: pa.Array
    """Text; empty for a row without a key (or with an "address" without ``@``)."""
    emails: pa.Array | None
    kind: str
    """``id`` (keys as written, trimmed) or ``email`` (keyed hashes of the addresses)."""


def recipient_keys(
    table: pd.DataFrame,
    audience: Audience,
    key: HashKey | None = None,
    source: str = "recipient list",
) -> RecipientKeys:
    """Each row's key; first checks that every column the spec names is in the list.

    Separate from :func:`prepare_arrays` so that the assignment can start hashing the keys while
    the other columns are prepared.
    """
    cols = audience.columns
    key_col, kind = key_column(table, audience)
    email_col = cols.email or (key_col if kind == "email" else None)
    if email_col is None and "email" in table.columns and not cols.id:
        email_col = "email"
    needed = [key_col, cols.segment, cols.consent, cols.suppressed, email_col, *audience.filters]
    missing = sorted({c for c in needed if c and c not in table.columns})
    if missing:
        raise RecipientsError(
            f"{source}: no column(s) {missing}; its columns are {list(table.columns)}. Rename "
            "them, or name yours in the spec under audience.columns / audience.filters"
        )
    emails = _text(table[email_col]) if email_col is not None else None
    if kind == "email":
        has = pc.match_substring(emails, "@")
        keys = pc.if_else(has, emails, "")  # no usable address: no key
        if pc.any(has).as_py():
            keys = pc.if_else(has, hash_address_array(keys, key or load_hash_key()), "")
    else:
        keys = pc.utf8_trim_whitespace(_text(table[key_col]))
        _refuse_addresses_as_ids(keys, key_col, source)
    return RecipientKeys(keys, emails, kind)


def prepare_arrays(
    table: pd.DataFrame,
    audience: Audience,
    key: HashKey | None = None,
    source: str = "recipient list",
    keys: RecipientKeys | None = None,
) -> PreparedRecipients:
    """:func:`prepare_recipients` as arrays: what the assignment of large lists uses.

    ``keys``: :func:`recipient_keys` of the same table, when the caller already has them.
    """
    cols = audience.columns
    keys, emails, kind = keys or recipient_keys(table, audience, key, source)
    n = len(table)
    labels = pc.utf8_trim_whitespace(_text(table[cols.segment]))
    in_filters = np.ones(n, dtype=bool)
    for column, allowed in audience.filters.items():
        trimmed = pc.utf8_trim_whitespace(_text(table[column]))
        in_filters &= pc.is_in(trimmed, value_set=pa.array(allowed, pa.string())).to_numpy(
            zero_copy_only=False
        )
    return PreparedRecipients(
        keys=keys,
        emails=emails,
        labels=labels,
        segment_code=_segment_codes(labels, audience, source, cols.segment),
        consent=_flag(table[cols.consent], cols.consent, source)
        if cols.consent
        else np.ones(n, bool),
        suppressed=_flag(table[cols.suppressed], cols.suppressed, source)
        if cols.suppressed
        else np.zeros(n, bool),
        in_filters=in_filters,
        key_kind=kind,
    )


def recently_tested_keys(
    history: pd.DataFrame,
    within_days: int,
    key: HashKey | None = None,
    as_of: datetime | None = None,
    source: str = "contact history",
) -> set[str]:
    """Keys of recipients sent a test within ``within_days`` before ``as_of`` (default: now).

    ``history`` has ``sent_at`` and ``recipient_key`` or ``email`` (hashed with ``key``, the same
    key as the recipient list). ``sent_at`` without a time zone is read as UTC.
    """
    if "sent_at" not in history.columns or not {"recipient_key", "email"} & set(history.columns):
        raise RecipientsError(
            f"{source}: needs a `sent_at` column and a `recipient_key` or `email` column; its "
            f"columns are {list(history.columns)}"
        )
    sent_at = pd.to_datetime(history["sent_at"], errors="coerce", utc=True, format="ISO8601")
    raw = history["sent_at"]
    bad = sent_at.isna() & ~(raw.isna() | raw.astype(str).str.strip().eq(""))
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 1)[:5].tolist()
        raise RecipientsError(
            f"{source}: sent_at is not a date/time in data row(s) {rows} (e.g. "
            f"{raw[bad].iloc[0]!r}); use ISO 8601 like 2026-03-02T09:00:00Z"
        )
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    recent = (sent_at >= pd.Timestamp(as_of - timedelta(days=within_days))).to_numpy()
    if "recipient_key" in history.columns:
        keys = pc.utf8_trim_whitespace(_text(history["recipient_key"]))
        return set(keys.to_numpy(zero_copy_only=False)[recent]) - {""}
    emails = _text(history["email"]).to_numpy(zero_copy_only=False)[recent]
    emails = [e for e in emails if "@" in e]
    # A history repeats addresses (one row per send): each distinct one is hashed once.
    return set(hash_addresses(list(set(emails)), key or load_hash_key()))


def _refuse_addresses_as_ids(keys: pa.Array, column: str, source: str) -> None:
    """An id column full of e-mail addresses would put raw addresses in every output: refuse."""
    with_at = keys.filter(pc.match_substring(keys, "@"))
    sample = with_at.slice(0, 1000).to_pylist()
    if any(EMAIL_PATTERN.fullmatch(value) for value in sample):
        raise RecipientsError(
            f"{source}: the id column {column!r} holds e-mail addresses, which would be written "
            "as they are into the assignment and the events. Name it as the address column "
            f"instead (audience.columns.email: {column}) so that it is hashed with the key"
        )


def _text(column: pd.Series) -> pa.Array:
    """A column as Arrow text, missing values as empty strings (ids like 00123 stay as written)."""
    if pd.api.types.is_float_dtype(column):
        values = column.dropna().to_numpy(dtype=float)
        if np.all(values == np.floor(values)):
            column = column.astype("Int64")  # 123.0 from a Parquet float column is the id 123
    try:
        arr = pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python types in an object column
        arr = pa.array(column.astype("string"), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.type != pa.string():
        arr = arr.cast(pa.string())
    return pc.fill_null(arr, "")


def _unique_with_codes(arr: pa.Array) -> tuple[list[str], np.ndarray]:
    """Distinct values of a low-cardinality text array and each row's index into them."""
    encoded = pc.dictionary_encode(arr)
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


def _flag(column: pd.Series, name: str, source: str) -> np.ndarray:
    """A yes/no column as booleans; missing is false; an unknown value is an error, not a guess."""
    if pd.api.types.is_bool_dtype(column):
        return column.fillna(False).to_numpy(dtype=bool)
    values, codes = _unique_with_codes(pc.utf8_lower(pc.utf8_trim_whitespace(_text(column))))
    unknown = sorted(set(values) - TRUE_VALUES - FALSE_VALUES)
    if unknown:
        raise RecipientsError(
            f"{source}: column {name!r} has value(s) {unknown[:10]} that are neither yes nor no; "
            f"use one of {sorted(TRUE_VALUES - {'1.0'})} or {sorted(FALSE_VALUES - {'0.0', ''})}"
        )
    truth = np.array([v in TRUE_VALUES for v in values], dtype=bool)
    return truth[codes] if len(values) else np.zeros(len(codes), dtype=bool)


def _segment_codes(labels: pa.Array, audience: Audience, source: str, column: str) -> np.ndarray:
    """Index into :data:`SEGMENT_ORDER` per row (-1: unmapped); unmapped may raise (see spec)."""
    values, codes = _unique_with_codes(labels)
    mapped = [audience.lifecycle_segment(label) for label in values]
    counts = np.bincount(codes, minlength=len(values))
    unmapped = {label: int(counts[i]) for i, label in enumerate(values) if mapped[i] is None}
    if unmapped and audience.unmapped_segments == "error":
        listed = ", ".join(f"{label!r} ({n:,} rows)" for label, n in sorted(unmapped.items()))
        example = "\n".join(
            f"      {label!r}: {_guess_segment(label)}" for label in sorted(unmapped)[:6]
        )
        raise RecipientsError(
            f"{source}: segment label(s) in column {column!r} that are not lifecycle segments "
            f"({', '.join(s.value for s in Segment)}): {listed}. Map them in the spec, e.g.\n"
            f"  audience:\n    segment_map:\n{example}\n"
            "or set audience.unmapped_segments: exclude to leave those recipients out (counted as "
            "unmapped_segment)."
        )
    lookup = np.array(
        [SEGMENT_ORDER.index(seg) if seg is not None else -1 for seg in mapped], dtype=np.int8
    )
    return lookup[codes] if len(values) else np.zeros(0, dtype=np.int8)


def _guess_segment(label: str) -> str:
    """A likely lifecycle segment for a label, only to write a helpful example in an error."""
    text = label.lower()
    for word, segment in (
        ("inactive", Segment.INACTIVE),
        ("lapsed", Segment.INACTIVE),
        ("new", Segment.NEW_CUSTOMER),
        ("prospect", Segment.PROSPECT),
        ("lead", Segment.PROSPECT),
        ("exist", Segment.EXISTING_CUSTOMER),
        ("customer", Segment.EXISTING_CUSTOMER),
    ):
        if word in text:
            return segment.value
    return "<one of " + " / ".join(s.value for s in Segment) + ">"
