"""What ``loopexp ingest`` did, per file and overall: the ``ingest_summary.json`` it writes.

Every input record is counted once: ``input_records == events + duplicates + quarantined``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_VERSION = "1"


@dataclass
class FileReport:
    """One input file: the format it was read as and how many records it held."""

    path: str
    format: str
    input_records: int
    events: int = 0
    """Records of this file kept as events (a duplicate of an earlier file's event is not)."""
    duplicates: int = 0
    quarantined: int = 0
    ignored: int = 0
    """Of ``quarantined``: documented provider types that are not outcomes."""


@dataclass
class IngestSummary:
    """What ``loopexp ingest`` did; ``input_records == events + duplicates + quarantined``."""

    input_records: int
    events: int
    duplicates: int
    quarantined: int
    machine_opens: int
    bot_clicks: int
    by_type: dict[str, int]
    quarantine_reasons: dict[str, int]
    removed_by_rule: dict[str, dict[str, dict[str, int]]]
    """rule → variant → {"open": n, "click": n}: opens and clicks each rule flagged."""
    files: list[FileReport]
    events_path: str
    quarantine_path: str
    hash_key: str
    """Where the hashing key came from (``env ...``, ``file ...`` or ``demo``), never the key."""
    schema_version: str = SUMMARY_VERSION
    warnings: list[str] = field(default_factory=list)
    distinct_addresses: int = 0
    """Addresses hashed (each distinct address once)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    """Seconds spent reading + mapping, hashing addresses, and deduping/flagging/writing."""
    ignored: int = 0
    """Of ``quarantined``: records of documented provider types that are not outcomes (a
    message dropped or rejected before sending, ...). In the quarantine file (reason
    ``ignored_type: ...``) so nothing is lost, but not errors: ``--strict`` fails only on
    :attr:`errors`."""
    ignored_by_type: dict[str, int] = field(default_factory=dict)
    """``provider:type`` → records ignored."""
    assignment_matched: int | None = None
    """With ``--assignment``: events whose recipient is on the assignment (else None)."""
    assignment_match_share: float | None = None
    """With ``--assignment``: the share of events whose recipient is on it; 0 is an error (a
    wrong hashing key, or another list's exports)."""
    outside_scope: dict[str, int] = field(default_factory=dict)
    """With ``--spec`` (``data.campaign_ids``) or a stamped ``--assignment``: events the analysis
    will quarantine as not this send's (``other_campaign``, ``before_assignment``; issue 28)."""

    @property
    def errors(self) -> int:
        """Quarantined records that are errors (unparseable, unknown type, no recipient, ...)."""
        return self.quarantined - self.ignored

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``--json`` output), with ``errors`` = quarantined - ignored."""
        return {**asdict(self), "errors": self.errors}


def write_summary(summary: IngestSummary, out: Path) -> None:
    """``out/ingest_summary.json``."""
    (out / "ingest_summary.json").write_text(json.dumps(summary.to_dict(), indent=2), "utf-8")
