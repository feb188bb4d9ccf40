"""Braze Currents Avro exports (the S3 / GCS / Azure file layout) through ``loopexp ingest``.

The files are written here with fastavro in the shape Currents documents: one object-container
file per event type, writer schema ``dataexport.S3.inner.users.messages.email.<Type>``, flat
records (``id``, ``time`` in Unix seconds, ``email_address``, ``message_variation_id``,
``machine_open``, ``is_suspected_bot_click``, ...), under ``event_type=<type>/date=<hour>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.core.keys import EMAIL_PATTERN, HashKey, hash_address
from loopexp.events.adapters.braze import event_type_of
from loopexp.events.config import IngestConfig
from loopexp.events.ingest import ingest
from loopexp.events.summary import IngestSummary

KEY = HashKey(b"test-secret-for-avro", "test")
NAMESPACE = "dataexport.S3.inner.users.messages.email"
OPT = ["null", "string"]
COMMON = [
    {"name": "id", "type": "string"},
    {"name": "user_id", "type": "string"},
    {"name": "dispatch_id", "type": OPT, "default": None},
    {"name": "time", "type": "int"},
    {"name": "timezone", "type": OPT, "default": None},
    {"name": "campaign_id", "type": OPT, "default": None},
    {"name": "message_variation_id", "type": OPT, "default": None},
    {"name": "email_address", "type": "string"},
    {"name": "send_id", "type": OPT, "default": None},
]
EXTRA = {
    "Open": [
        {"name": "user_agent", "type": OPT, "default": None},
        {"name": "machine_open", "type": OPT, "default": None},
    ],
    "Click": [
        {"name": "url", "type": OPT, "default": None},
        {"name": "user_agent", "type": OPT, "default": None},
        {"name": "is_suspected_bot_click", "type": ["null", "boolean"], "default": None},
    ],
}
VARIANTS = {"var-aaa": "control", "var-bbb": "personal"}


def currents_file(
    folder: Path,
    kind: str,
    records: list[dict],
    name: str | None = None,
    namespace: str = NAMESPACE,
    block_bytes: int = 16_000,
) -> Path:
    """One Currents Avro file for ``kind`` under event_type=.../date=.../ (deflate-compressed)."""
    schema = {
        "type": "record",
        "name": name or kind,
        "namespace": namespace,
        "fields": COMMON + EXTRA.get(kind, []),
    }
    sub = folder / f"event_type=users.messages.email.{kind}" / "date=2026-11-26-10"
    sub.mkdir(parents=True, exist_ok=True)
    path = sub / f"dataexport.prod-03.S3.integration.abc+0+000{len(records)}.avro"
    with path.open("wb") as handle:
        parsed = fastavro.parse_schema(schema)
        fastavro.writer(handle, parsed, records, codec="deflate", sync_interval=block_bytes)
    return path


def rec(i: int, email: str, variation: str = "var-aaa", **extra) -> dict:
    return {
        "id": f"ev-{i}",
        "user_id": f"u{i}",
        "dispatch_id": "d-1",
        "time": 1_795_000_000 + 3_600 * i,  # an hour apart: no timing rule fires
        "campaign_id": "camp-1",
        "message_variation_id": variation,
        "email_address": email,
        **extra,
    }


def run(paths, out: Path) -> tuple[IngestSummary, pd.DataFrame, pd.DataFrame]:
    config = IngestConfig(variant_map=VARIANTS)
    summary = ingest(paths, out, key=KEY, config=config)
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined
    return summary, pd.read_parquet(summary.events_path), pd.read_parquet(summary.quarantine_path)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = tmp_path / "currents"
    currents_file(
        root,
        "Delivery",
        [rec(1, "ann@example.com"), rec(2, "bob@example.com", "var-bbb")],
    )
    currents_file(
        root,
        "Open",
        [
            rec(3, "ann@example.com", machine_open="true", user_agent="Mozilla/5.0"),
            rec(4, "bob@example.com", "var-bbb", user_agent="Mozilla/5.0"),
        ],
    )
    currents_file(
        root,
        "Click",
        [
            rec(5, "bob@example.com", "var-bbb", url="https://shop.example/sale?utm_source=x"),
            rec(6, "ann@example.com", url="https://shop.example/new", is_suspected_bot_click=True),
            rec(5, "bob@example.com", "var-bbb", url="https://shop.example/sale?utm_source=x"),
        ],
    )
    return root


def test_currents_folder_layout_ingests_every_type_with_flags_and_variants(
    export: Path, tmp_path: Path
) -> None:
    summary, events, quarantine = run(str(export / "**" / "*.avro"), tmp_path / "out")
    assert summary.input_records == 7 and summary.quarantined == 0 and quarantine.empty
    assert summary.duplicates == 1  # at-least-once delivery: the repeated id is dropped
    assert summary.by_type == {"click": 2, "delivered": 2, "open": 2}
    assert set(events["provider"]) == {"braze"}
    by_id = events.set_index("event_id")
    assert by_id.loc["ev-3", "is_machine_open"] and by_id.loc["ev-3", "bot_reason"]
    assert by_id.loc["ev-6", "is_bot_click"] and not by_id.loc["ev-5", "is_bot_click"]
    assert by_id.loc["ev-2", "variant_id"] == "personal"
    assert by_id.loc["ev-1", "variant_id"] == "control"
    assert by_id.loc["ev-1", "ts"] == pd.Timestamp(1_795_003_600, unit="s", tz="UTC")
    assert by_id.loc["ev-1", "recipient_key"] == hash_address("ann@example.com", KEY)


def test_no_address_reaches_any_output(export: Path, tmp_path: Path) -> None:
    run(str(export / "**" / "*.avro"), tmp_path / "out")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = pd.read_parquet(path).to_csv() if path.suffix == ".parquet" else path.read_text()
            assert not EMAIL_PATTERN.search(text), path


def test_type_from_the_folder_when_the_schema_name_says_nothing(tmp_path: Path) -> None:
    path = currents_file(tmp_path / "x", "Open", [rec(1, "ann@example.com")], name="Generic")
    summary, _, _ = run(path, tmp_path / "out")
    assert summary.by_type == {"open": 1}
    assert event_type_of("Generic", path) == "users.messages.email.Open"
    assert event_type_of(f"{NAMESPACE}.Click", Path("/tmp/a.avro")) == "users.messages.email.Click"


def test_a_file_of_unknown_type_is_quarantined_not_dropped(tmp_path: Path) -> None:
    records = [rec(1, "ann@example.com")]
    path = currents_file(tmp_path / "x", "Open", records, name="Event", namespace="com.example")
    flat = tmp_path / "flat.avro"
    flat.write_bytes(path.read_bytes())  # no event_type= folder, schema name says nothing
    summary, _, quarantine = run(flat, tmp_path / "out")
    assert summary.events == 0 and summary.quarantined == 1
    assert "event type unknown" in quarantine["reason"].iloc[0]
    assert "ann@example.com" not in quarantine["raw"].iloc[0]  # masked like every quarantine


def test_unmapped_and_non_outcome_types_are_counted(tmp_path: Path) -> None:
    currents_file(tmp_path / "c", "Abort", [rec(1, "ann@example.com")])
    summary, _, quarantine = run(tmp_path / "c" / "**" / "*.avro", tmp_path / "out")
    assert summary.events == 0 and summary.quarantined == 1 and len(quarantine) == 1


def test_corrupt_and_truncated_files_keep_what_they_can(tmp_path: Path) -> None:
    records = [rec(i, f"p{i}@example.com") for i in range(3)]
    # one block per record: a file cut inside its last block keeps the two blocks before it
    good = currents_file(tmp_path / "c", "Delivery", records, block_bytes=1)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.avro"
    truncated.write_bytes(data[: len(data) - 20])
    junk = tmp_path / "junk.avro"
    junk.write_bytes(b"this is not avro at all")
    _, events, quarantine = run([truncated, junk], tmp_path / "out")
    assert sorted(events["event_id"]) == ["ev-0", "ev-1"]
    reasons = sorted(quarantine["reason"])
    assert len(reasons) == 2
    assert reasons[0].startswith("corrupt Avro block after record 2")
    assert reasons[1].startswith("not a readable Avro file")


def test_cli_ingests_an_avro_folder_glob(export: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["ingest", str(export / "**" / "*.avro"), "--out", str(tmp_path / "out"), "--json"],
        env={"LOOPEXP_HASH_KEY": "cli-secret"},
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{") :])
    assert doc["input_records"] == 7 and doc["events"] == 6


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(0, 400), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_mangled_avro_never_crashes_and_loses_nothing(tmp_path: Path, cut: int, flips) -> None:
    records = [rec(i, f"p{i}@example.com") for i in range(4)]
    good = currents_file(tmp_path / "src", "Open", records, block_bytes=1)
    data = bytearray(good.read_bytes())
    for at in flips:
        data[at % len(data)] ^= 0xFF
    mangled = tmp_path / "in" / "event_type=users.messages.email.Open" / "m.avro"
    mangled.parent.mkdir(parents=True, exist_ok=True)
    mangled.write_bytes(bytes(data[: max(1, len(data) - cut)]))
    summary, events, quarantine = run(mangled, tmp_path / "out")  # the invariant is checked there
    # (a cut exactly at a block boundary leaves a valid, shorter file: Avro containers carry
    # no record count, so nothing can tell; every record read is an event or quarantined)
    assert summary.events <= len(records)
    assert not EMAIL_PATTERN.search(quarantine.to_csv() + events.to_csv())
