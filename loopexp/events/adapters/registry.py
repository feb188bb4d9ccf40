"""The provider adapters as plug-ins: the interface each one declares, and the registry of them.

An adapter says what it reads and how: ``detect`` (does this record look like mine), ``expand``
(a payload into provider records), ``normalize`` (a record into staged rows, or a
:class:`~loopexp.events.adapters.base.RecordError` whose message is the quarantine reason), and
optionally ``stage_bulk`` / ``stage_records`` (a provider mapped in DuckDB instead of record by
record), ``read_units`` (a file type only it reads) and ``verify`` (a webhook's signature, for the
receiver of issue #24). Each adapter module calls :func:`register` on import; ingest, the CLI and
the spec ask the registry, so nothing outside ``adapters/`` names a provider.

Importing this module loads no adapter and no DuckDB: the built-in adapters are imported the first
time the registry is asked (by name, so a module that registers itself creates no import cycle).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from loopexp.core.errors import InputError
from loopexp.events.adapters.base import Context
from loopexp.events.config import IngestConfig

if TYPE_CHECKING:
    import duckdb

    from loopexp.events.reader import Unit

#: Built-in adapter modules, in detection order (the first whose ``detect`` says yes reads the
#: file; the order is also the order of the ``--format`` names). The generic table adapter last.
BUILTIN: tuple[str, ...] = (
    "sendgrid",
    "mailgun",
    "ses",
    "postmark",
    "braze",
    "klaviyo",
    "mailchimp",
    "mandrill",
    "table",
)

#: File kinds the generic reader splits into records.
JSON, CSV, PARQUET = "json", "csv", "parquet"


class VerificationUnsupportedError(InputError):
    """An adapter that cannot verify a webhook's signature (yet): do not accept its webhooks."""


@dataclass(frozen=True)
class BulkJob:
    """One JSON file an adapter may stage in bulk (``stage_bulk``), and what it needs for it."""

    path: Path
    shape: str
    """``array``, ``ndjson`` or ``document`` (see :func:`loopexp.events.reader.shape_of`)."""
    plain: bool
    """Neither compressed nor with a byte-order mark: DuckDB can read the file itself."""
    config: IngestConfig
    first_no: int
    """The input number of the file's first record."""
    table: str
    """Name for a table of checked rows, when the adapter checks while it reads."""
    check: Callable[[str], str]
    """Staged-row query → checked-row query (ingest's common checks), for ``table``."""


@dataclass(frozen=True)
class BulkResult:
    """What a bulk stage did: the file's record count and its checked table, if it made one.

    ``table`` None: the rows went to the ``staged_rows`` table (checked later, with the rest).
    """

    records: int
    table: str | None = None


class Adapter:
    """One provider's export format(s). Subclass it, set the class attributes, and register it.

    Implement :meth:`normalize`, or :meth:`stage_records` for a provider mapped in SQL.
    """

    #: The provider name written to the events' ``provider`` column.
    name: ClassVar[str]
    #: ``--format`` names it answers to → the file kind the name forces (None: told by the
    #: file's suffix and content), e.g. ``{"mailchimp": None, "mailchimp-csv": "csv"}``.
    formats: ClassVar[Mapping[str, str | None]]
    #: File kinds of the generic reader it reads (``json``, ``csv``, ``parquet``).
    reads: ClassVar[frozenset[str]] = frozenset({JSON})
    #: Suffixes of files only this adapter reads (through :meth:`read_units`).
    own_suffixes: ClassVar[tuple[str, ...]] = ()
    #: What its own files are, for messages (e.g. ``"a Currents Avro export"``).
    own_files: ClassVar[str] = ""
    #: True for an adapter of no provider (plain tables): read when nothing else claims a table.
    generic: ClassVar[bool] = False

    def detect(self, value: Any) -> bool:
        """Whether a parsed JSON record (the file's first) is this provider's."""
        return False

    def detect_columns(self, columns: list[str], config: IngestConfig) -> bool:
        """Whether a table with these (normalised) column names is this provider's."""
        return False

    def control_kind(self, value: Any) -> str | None:
        """What control message of this provider's transport a parsed record is, or None.

        A control message (an SNS subscription confirmation) is no event and tells no provider:
        :meth:`normalize` ignores it and format detection skips it for the next record.
        """
        return None

    def expand(self, value: Any) -> Iterator[tuple[Any, Context]]:
        """A payload (a page, a batch, a webhook body) as provider records with their context."""
        yield value, Context()

    def normalize(self, record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
        """A provider record as staged rows; :class:`RecordError` to quarantine it."""
        raise NotImplementedError(f"{self.name} records are staged by stage_records")

    def table_context(self, path: Path, columns: list[str], config: IngestConfig) -> Context:
        """What :meth:`normalize` needs for the rows of a table file (an error when unusable)."""
        return Context()

    def table_format(self, kind: str, columns: list[str]) -> str:
        """The format name reported for a table file (``csv`` or ``parquet``) of these columns."""
        return next(iter(self.formats))

    def read_units(self, path: Path) -> Iterator[Unit]:
        """Records of a file with one of :attr:`own_suffixes` (quarantined units where broken)."""
        raise NotImplementedError(f"{self.name} reads no file type of its own")

    def stage_bulk(self, con: duckdb.DuckDBPyConnection, job: BulkJob) -> BulkResult | None:
        """Stage a whole JSON file in DuckDB; None to leave it to the record-by-record path."""
        return None

    def stage_records(
        self, con: duckdb.DuckDBPyConnection, texts: list[tuple[int, str]], job: BulkJob
    ) -> bool:
        """Stage split records (offset in the file, raw JSON) into ``staged_rows`` in one go.

        False (the default): ingest normalizes each record through :meth:`normalize`.
        """
        return False

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: Mapping[str, str]) -> bool:
        """Whether a webhook request really comes from the provider (its signature).

        The webhook receiver (issue #24) calls it; an adapter that cannot tell raises
        :class:`VerificationUnsupportedError`, so its webhooks are refused rather than trusted.
        """
        raise VerificationUnsupportedError(f"{self.name}: webhook signatures are not verified yet")


_REGISTERED: dict[str, Adapter] = {}
_loaded = False


def register(adapter: Adapter) -> Adapter:
    """Add an adapter; its module calls this on import.

    A second one of the same name replaces the first only if it is the same class (a reloaded
    module).
    """
    known = _REGISTERED.get(adapter.name)
    if known is not None and type(known).__qualname__ != type(adapter).__qualname__:
        raise ValueError(f"an adapter named {adapter.name!r} is already registered")
    _REGISTERED[adapter.name] = adapter
    return adapter


def _load_builtin() -> None:
    global _loaded  # noqa: PLW0603 (the built-ins are imported once, on first use)
    if not _loaded:
        for module in BUILTIN:
            importlib.import_module(f"{__package__}.{module}")
        _loaded = True


def adapters() -> tuple[Adapter, ...]:
    """Every registered adapter: the built-ins in :data:`BUILTIN` order, then any others."""
    _load_builtin()
    rank = {name: i for i, name in enumerate(BUILTIN)}
    return tuple(sorted(_REGISTERED.values(), key=lambda a: rank.get(a.name, len(rank))))


def providers() -> tuple[str, ...]:
    """Names of the adapters of a provider (every adapter but the generic ones)."""
    return tuple(a.name for a in adapters() if not a.generic)


def format_names() -> tuple[str, ...]:
    """Every ``--format`` name ingest accepts: ``auto``, then each adapter's, in registry order."""
    return ("auto", *(fmt for a in adapters() for fmt in a.formats))


def by_format(fmt: str) -> Adapter | None:
    """The adapter a ``--format`` name selects (None for ``auto`` or an unknown name)."""
    return next((a for a in adapters() if fmt in a.formats), None)


def forced_kind(fmt: str) -> str | None:
    """The file kind a format name forces, whatever the file's suffix (e.g. ``csv``)."""
    adapter = by_format(fmt)
    return adapter.formats[fmt] if adapter is not None else None


def detect(value: Any) -> Adapter | None:
    """The first adapter that recognises a parsed JSON record."""
    return next((a for a in adapters() if JSON in a.reads and a.detect(value)), None)


def control(value: Any) -> Adapter | None:
    """The adapter whose transport's control message a parsed JSON record is (None: not one)."""
    return next(
        (a for a in adapters() if JSON in a.reads and a.control_kind(value) is not None), None
    )


def detect_columns(kind: str, columns: list[str], config: IngestConfig) -> Adapter:
    """The adapter of a table file (``csv`` or ``parquet``) with these columns.

    A provider's when one recognises the columns, else the generic one.
    """
    readers = [a for a in adapters() if kind in a.reads and not a.generic]
    found = next((a for a in readers if a.detect_columns(columns, config)), None)
    return found or generic_table()


def generic_table() -> Adapter:
    """The adapter of plain tables (any provider's columns, mapped by the spec)."""
    return next(a for a in adapters() if a.generic)


def own_reader(path: Path) -> Adapter | None:
    """The adapter that reads files of this one's suffix itself (e.g. ``.avro``), if any."""
    name = path.name.lower()
    return next((a for a in adapters() if a.own_suffixes and name.endswith(a.own_suffixes)), None)


def own_suffixes() -> tuple[str, ...]:
    """Suffixes of the files adapters read themselves."""
    return tuple(s for a in adapters() for s in a.own_suffixes)
