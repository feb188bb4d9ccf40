"""Events that belong to this send: the spec's provider campaign ids and the assignment's time.

An ESP export or a webhook stream holds every mailing to the list, not only the experiment's: a
newsletter sent to the same recipients the same week opens and clicks in both arms, and counted as
the experiment's it dilutes (or, when it reached one arm more, biases) the comparison. Two rules,
applied after the canonical ones (:data:`loopexp.events.validation.QUARANTINE_RULES`) and defined
once for both engines (the same :class:`~loopexp.events.validation.Rule` structure, compiled by
each dialect):

- :data:`OTHER_CAMPAIGN`: the event's ``campaign_id`` (what the adapter read from the provider's
  campaign fields) is present and is none of the spec's ``data.campaign_ids``. An event without a
  campaign field passes: no provider field, nothing to judge it by.
- :data:`BEFORE_ASSIGNMENT`: the event happened before the assignment was made (the time
  ``loopexp assign`` records in assignment.parquet's metadata), so it cannot be the experiment's.

Both reasons are counted and written to the quarantine file like the others, but they do not count
toward ``data.max_quarantine_share``: an export of the whole account is not malformed data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from loopexp.events.dialects import DUCKDB, Dialect
from loopexp.events.validation import Rule

OTHER_CAMPAIGN = "other_campaign"
BEFORE_ASSIGNMENT = "before_assignment"
#: The reasons of this module: counted, reported, quarantined, but not malformed data.
SCOPE_REASONS: tuple[str, ...] = (OTHER_CAMPAIGN, BEFORE_ASSIGNMENT)

#: The assignment Parquet file's key-value metadata holding when it was made (ISO 8601, UTC).
ASSIGNED_AT_KEY = b"loopexp.assigned_at"

_OTHER_CAMPAIGN_RULE = Rule(
    OTHER_CAMPAIGN,
    "campaign_id IS NOT NULL AND trim(campaign_id) <> '' AND NOT ({this_campaign})",
    "these events carry another mailing's campaign id; if they are this send's, add their "
    "campaign_id to the spec's data.campaign_ids",
)
_BEFORE_ASSIGNMENT_RULE = Rule(
    BEFORE_ASSIGNMENT,
    "ts < {assigned_at}",
    "these events happened before the assignment was made: an export of an earlier mailing, or "
    "the wrong assignment file",
)
#: What to check when many events get each reason of this module.
SCOPE_HINTS: dict[str, str] = {
    rule.reason: rule.hint for rule in (_OTHER_CAMPAIGN_RULE, _BEFORE_ASSIGNMENT_RULE)
}


@dataclass(frozen=True)
class SendScope:
    """What says an event belongs to this send: its campaign ids, and when it was assigned.

    The empty scope (no ids, no time) quarantines nothing: specs without ``data.campaign_ids``
    and assignments without a recorded time are read as before.
    """

    campaign_ids: tuple[str, ...] = ()
    assigned_at: datetime | None = None

    def rules(self) -> tuple[Rule, ...]:
        """The rules this scope holds events to, in order."""
        return tuple(
            rule
            for rule, used in (
                (_OTHER_CAMPAIGN_RULE, bool(self.campaign_ids)),
                (_BEFORE_ASSIGNMENT_RULE, self.assigned_at is not None),
            )
            if used
        )

    def fields(self, d: Dialect) -> dict[str, str]:
        """The dialect's SQL of the ``{field}`` names the rules use."""
        out = {}
        if self.campaign_ids:
            out["this_campaign"] = d.one_of("trim(campaign_id)", self.campaign_ids)
        if self.assigned_at is not None:
            micros = round(self.assigned_at.astimezone(UTC).timestamp() * 1e6)
            out["assigned_at"] = d.timestamp_from_micros(str(micros))
        return out

    def condition(self, d: Dialect, reason: str) -> str | None:
        """The SQL condition of ``reason`` in ``d`` (None: the scope has no such rule)."""
        rule = next((r for r in self.rules() if r.reason == reason), None)
        return None if rule is None else rule.condition.format_map(self.fields(d))


def send_scope(campaign_ids: Sequence[str] | None, assignment: object = None) -> SendScope:
    """The scope of a spec's ``data.campaign_ids`` and an assignment (its recorded time, if any)."""
    ids = tuple(dict.fromkeys(str(c).strip() for c in campaign_ids or () if str(c).strip()))
    return SendScope(campaign_ids=ids, assigned_at=assigned_at_of(assignment))


def stamped(table: pa.Table, when: datetime | None = None) -> pa.Table:
    """``table`` with its assignment time (``when``, default now) in its Parquet metadata."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    made = {ASSIGNED_AT_KEY: when.isoformat(timespec="seconds").encode()}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **made})


def assigned_at_of(assignment: object) -> datetime | None:
    """When an assignment Parquet file was made (:data:`ASSIGNED_AT_KEY`), else None.

    Files without the key (older assignments, simulated ones, CSV, DataFrames, globs) have no
    time: their events are not held to it.
    """
    if not isinstance(assignment, str | Path) or not str(assignment).endswith(".parquet"):
        return None
    path = Path(assignment)
    if not path.is_file():
        return None
    import pyarrow.parquet as pq  # noqa: PLC0415 (only when an assignment file is read)

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None  # not Parquet after all: the engine's own check names the file
    raw = metadata.get(ASSIGNED_AT_KEY)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.decode())
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def scope_note(reasons: Mapping[str, int]) -> str:
    """What the send's scope left out, for a message about what is left (empty: nothing)."""
    left_out = {r: n for r, n in reasons.items() if r in SCOPE_REASONS}
    if not left_out:
        return ""
    counts = ", ".join(f"{n:,} {r}" for r, n in left_out.items())
    return f" Not this send's events ({counts}): {SCOPE_HINTS[next(iter(left_out))]}."


def scope_counts(con: Any, relation: str, scope: SendScope) -> dict[str, int]:
    """Events of a canonical ``relation`` (DuckDB) each rule of ``scope`` would quarantine.

    For ``loopexp ingest``, whose event table keeps every mailing's events: the same conditions
    the analysis quarantines by, counted, so the summary says how many are not this send's.
    """
    reasons = [rule.reason for rule in scope.rules()]
    if not reasons:
        return {}
    counts = ", ".join(f"count(*) FILTER (WHERE {scope.condition(DUCKDB, r)})" for r in reasons)
    row = con.execute(f"SELECT {counts} FROM {relation}").fetchone()
    return {r: int(n) for r, n in zip(reasons, row, strict=True)}
