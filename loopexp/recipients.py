"""Recipient lists in: a CSV or Parquet file becomes one normalised table, nothing dropped.

The team's list has its own column names and segment labels; ``audience.columns`` and
``audience.segment_map`` in the spec say what is what. :func:`prepare_recipients` turns each input
row into one row of :data:`PREPARED_COLUMNS` — the recipient key (an id as is, or the keyed hash of
the e-mail address), the mapped lifecycle segment, consent, suppression and filter results — so
that :mod:`loopexp.assign` can account for every row (assigned or excluded with a reason).
Problems that concern the whole file (a missing column, an unknown consent value, an unmapped
segment label) raise :class:`RecipientsError` naming the file, the column, the values and the fix.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from loopexp.keys import HashKey, hash_addresses, load_hash_key
from loopexp.spec import Audience, Segment

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


class RecipientsError(ValueError):
    """A recipient list (or contact history) that cannot be used as it is, and what to do."""


def read_table(path: str | Path, what: str = "recipient list") -> pd.DataFrame:
    """Read a CSV (text columns kept as text: ids keep their leading zeros) or Parquet file."""
    path = Path(path)
    if not path.exists():
        raise RecipientsError(f"{what} {path}: file not found")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
            sep = "\t" if ".tsv" in suffixes else ","
            return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
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
    error`` an unmapped label raises instead.
    ``key`` is needed only when the key is hashed from e-mail addresses (see
    :func:`loopexp.keys.load_hash_key`); without one, that function's error says how to set one.
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
    n = len(table)
    out = pd.DataFrame({"row": np.arange(1, n + 1, dtype=np.int64)})

    if email_col is not None:
        emails = _text(table[email_col])
        out["email"] = emails
    if kind == "email":
        has = emails.str.contains("@", regex=False)
        keys = np.full(n, "", dtype=object)
        if has.any():
            key = key or load_hash_key()
            keys[has.to_numpy()] = hash_addresses(emails[has].tolist(), key)
        out["recipient_key"] = keys
    else:
        out["recipient_key"] = _text(table[key_col]).str.strip().to_numpy(dtype=object)

    labels = _text(table[cols.segment]).str.strip()
    out["segment_label"] = labels.to_numpy(dtype=object)
    out["segment"] = _map_segments(labels, audience, source, cols.segment)
    out["consent"] = (
        _flag(table[cols.consent], cols.consent, source) if cols.consent else np.ones(n, bool)
    )
    out["suppressed"] = (
        _flag(table[cols.suppressed], cols.suppressed, source)
        if cols.suppressed
        else np.zeros(n, bool)
    )
    in_filters = np.ones(n, dtype=bool)
    for column, allowed in audience.filters.items():
        in_filters &= _text(table[column]).str.strip().isin(allowed).to_numpy()
    out["in_filters"] = in_filters
    return out[[c for c in PREPARED_COLUMNS if c in out.columns]]


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
    bad = sent_at.isna() & (_text(history["sent_at"]).str.strip() != "")
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 1)[:5].tolist()
        raise RecipientsError(
            f"{source}: sent_at is not a date/time in data row(s) {rows} (e.g. "
            f"{history['sent_at'][bad].iloc[0]!r}); use ISO 8601 like 2026-03-02T09:00:00Z"
        )
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    recent = (sent_at >= pd.Timestamp(as_of - timedelta(days=within_days))).to_numpy()
    if "recipient_key" in history.columns:
        keys = _text(history["recipient_key"]).str.strip()[recent]
        return set(keys[keys != ""])
    emails = _text(history["email"])[recent]
    emails = emails[emails.str.strip() != ""]
    return set(hash_addresses(emails.tolist(), key or load_hash_key()))


def _text(column: pd.Series) -> pd.Series:
    """A column as text, missing values as empty strings (ids like 00123 stay as written)."""
    if pd.api.types.is_float_dtype(column) and column.dropna().mod(1).eq(0).all():
        column = column.astype("Int64")  # 123.0 from a Parquet float column is the id 123
    return column.astype("string").fillna("").astype(object)


def _flag(column: pd.Series, name: str, source: str) -> np.ndarray:
    """A yes/no column as booleans; missing is false; an unknown value is an error, not a guess."""
    if pd.api.types.is_bool_dtype(column):
        return column.fillna(False).to_numpy(dtype=bool)
    text = _text(column).str.strip().str.lower()
    unknown = sorted(set(text) - TRUE_VALUES - FALSE_VALUES)
    if unknown:
        raise RecipientsError(
            f"{source}: column {name!r} has value(s) {unknown[:10]} that are neither yes nor no; "
            f"use one of {sorted(TRUE_VALUES - {'1.0'})} or {sorted(FALSE_VALUES - {'0.0', ''})}"
        )
    return text.isin(TRUE_VALUES).to_numpy()


def _map_segments(labels: pd.Series, audience: Audience, source: str, column: str) -> np.ndarray:
    mapping = {label: audience.lifecycle_segment(label) for label in labels.unique()}
    counts = labels.value_counts()
    unmapped = {label: int(counts[label]) for label, seg in mapping.items() if seg is None}
    if unmapped and audience.unmapped_segments == "error":
        listed = ", ".join(f"{label!r} ({n:,} rows)" for label, n in sorted(unmapped.items()))
        example = "\n".join(
            f"    {label!r}: {_guess_segment(label)}" for label in sorted(unmapped)[:6]
        )
        raise RecipientsError(
            f"{source}: segment label(s) in column {column!r} that are not lifecycle segments "
            f"({', '.join(s.value for s in Segment)}): {listed}. Map them in the spec, e.g.\n"
            f"  audience:\n    segment_map:\n{example}\n"
            "or set audience.unmapped_segments: exclude to leave those recipients out (counted as "
            "unmapped_segment)."
        )
    values = {label: segment.value if segment else "" for label, segment in mapping.items()}
    return labels.map(values).to_numpy(dtype=object)


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
