"""Every quarantine rule of loopexp can fire: a rule nobody can trigger is a bug.

The rule sets are read from :mod:`loopexp.events.validation` (where every quarantine rule is
defined) and each rule gets a row built to break it, and only it: ingest's rules over staged rows
(:data:`~loopexp.events.validation.STAGED_RULES`) through ``ingest`` itself, the canonical rules
(:data:`~loopexp.events.validation.QUARANTINE_RULES` and the duplicate) through the DuckDB engine.
A valid row beside them must stay valid, so a rule that fires on everything fails too; a rule
added without a breaking row here fails :func:`test_every_rule_has_a_row_built_to_break_it`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest

from loopexp.core.keys import HashKey
from loopexp.events.adapters import registry
from loopexp.events.adapters.base import Context, row
from loopexp.events.config import IngestConfig
from loopexp.events.ingest import ingest
from loopexp.events.validation import QUARANTINE_RULES, REASONS, STAGED_RULES
from loopexp.metrics import LIBRARY, compute_metrics

KEY = HashKey(b"rules-secret", "test")
WHEN = datetime(2026, 3, 2, 9, tzinfo=UTC)
VALID = "valid"

# --- ingest's rules over staged rows ------------------------------------------------------------

#: Reason → the staged row an adapter makes that breaks that rule alone (VALID: breaks none).
STAGED_BREAKERS: dict[str, dict[str, Any]] = {
    VALID: {"event_type": "open", "ts": WHEN, "recipient_key": "k1"},
    "missing recipient": {"event_type": "open", "ts": WHEN, "recipient_key": "", "address": " "},
    "missing or unparseable timestamp": {"event_type": "open", "ts": None, "recipient_key": "k1"},
    "unknown event type": {"event_type": "opened", "ts": WHEN, "recipient_key": "k1"},
}


class RuleBreaker(registry.Adapter):
    """A plug-in adapter that stages whatever row a record names, unchecked.

    The built-in adapters check times and types themselves; ingest's rules hold every adapter,
    a plug-in's too, so a plug-in is how a row reaches them unchecked.
    """

    name = "rule-breaker"
    formats: ClassVar[dict[str, str | None]] = {"rule-breaker": None}

    def detect(self, value: Any) -> bool:
        return isinstance(value, dict) and "breaks" in value

    def normalize(self, record: Any, ctx: Context, config: IngestConfig) -> list[dict]:
        return [row(event_id=f"e-{record['breaks']}", **STAGED_BREAKERS[record["breaks"]])]


def test_every_rule_has_a_row_built_to_break_it() -> None:
    assert set(STAGED_BREAKERS) - {VALID} == {r.reason for r in STAGED_RULES}
    assert set(CANONICAL_BREAKERS) - {VALID} == set(REASONS)
    assert {r.reason for r in QUARANTINE_RULES} < set(REASONS)


def test_each_staged_rule_fires_through_ingest(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(registry._REGISTERED, RuleBreaker.name, RuleBreaker())
    export = tmp_path / "plugin.ndjson"
    export.write_text("".join(json.dumps({"breaks": r}) + "\n" for r in STAGED_BREAKERS), "utf-8")
    summary = ingest([export], tmp_path / "out", key=KEY)
    assert [f.format for f in summary.files] == [RuleBreaker.name]
    events = pd.read_parquet(summary.events_path)
    quarantine = pd.read_parquet(summary.quarantine_path)
    assert events["event_id"].tolist() == [f"e-{VALID}"]
    fired = [json.loads(raw)["breaks"] for raw in quarantine["raw"]]
    assert dict(zip(fired, quarantine["reason"], strict=True)) == {
        r.reason: r.reason for r in STAGED_RULES
    }
    assert summary.quarantine_reasons == {r.reason: 1 for r in STAGED_RULES}


# --- the canonical rules, through the DuckDB engine ---------------------------------------------

T = "2026-03-02T09:00:00Z"
#: Reason → canonical events (every column text, as exports come) breaking that rule alone; the
#: duplicate needs a first copy, which stays valid.
CANONICAL_BREAKERS: dict[str, list[dict[str, str | None]]] = {
    VALID: [{"event_type": "delivered"}],
    "missing event_id": [{"event_id": ""}],
    "missing recipient_key": [{"recipient_key": ""}],
    REASONS[2]: [{"recipient_key": "jane.doe@example.com"}],
    "missing or unparseable ts": [{"ts": "next tuesday"}],
    "ts out of range (before 2000 or after 2099)": [{"ts": "2100-01-01T00:00:00Z"}],
    "unknown event_type": [{"event_type": "opened"}],
    "unparseable is_machine_open": [{"is_machine_open": "MPP"}],
    "unparseable is_bot_click": [{"event_type": "click", "is_bot_click": "maybe"}],
    "unparseable or non-finite revenue": [{"event_type": "order", "revenue": "inf"}],
    "order without a valid revenue": [{"event_type": "order", "revenue": "-1"}],
    REASONS[-1]: [
        {"event_id": "twice", "event_type": "click"},
        {"event_id": "twice", "event_type": "click", "ts": "2026-03-02T10:00:00Z"},
    ],
}


def _canonical_rows() -> list[dict[str, str | None]]:
    base = {"provider": "esp", "event_type": "open", "ts": T, "recipient_key": "k1"}
    base |= {"is_machine_open": None, "is_bot_click": None, "revenue": None}
    return [  # campaign_id names the row in the quarantine file, whatever it breaks
        {**base, "event_id": f"e{i}", "campaign_id": f"c{i}.{j}", **r}
        | {"expected": reason if j == len(rows) - 1 else VALID}
        for i, (reason, rows) in enumerate(CANONICAL_BREAKERS.items())
        for j, r in enumerate(rows)
    ]


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_each_canonical_rule_fires_in_the_duckdb_engine(tmp_path: Path, kind: str) -> None:
    rows = _canonical_rows()
    frame = pd.DataFrame(rows).drop(columns="expected").astype("string")
    events = tmp_path / f"events.{kind}"
    frame.to_csv(events, index=False) if kind == "csv" else frame.to_parquet(events, index=False)
    assignment = tmp_path / "assignment.parquet"
    pd.DataFrame({"recipient_key": ["k1"], "segment": ["all"], "variant_id": ["a"]}).to_parquet(
        assignment
    )
    quarantine = tmp_path / "quarantine.parquet"
    table = compute_metrics(events, assignment, list(LIBRARY), quarantine_path=quarantine)
    q = pd.read_parquet(quarantine)
    fired = dict(zip(q["campaign_id"], q["quarantine_reason"], strict=True))
    assert fired == {r["campaign_id"]: r["expected"] for r in rows if r["expected"] != VALID}
    assert table.quarantine_reasons == {reason: 1 for reason in REASONS}
    assert table.events - table.quarantined == sum(r["expected"] == VALID for r in rows)


def test_a_run_stopped_by_quarantine_shows_each_rules_hint():
    from loopexp.events.validation import QUARANTINE_RULES
    from loopexp.metrics.checks import quarantine_message

    hinted = [rule for rule in QUARANTINE_RULES if rule.hint]
    assert len(hinted) >= 4
    for rule in hinted:
        message = quarantine_message("events.parquet", 10, {rule.reason: 9}, 0.5, None)
        assert f"{rule.reason}: 9 ({rule.hint})" in message
