"""Records normalized in Python reach DuckDB in chunks: the same rows, numbers and quarantine.

A Mailgun NDJSON export (per-record adapter) with a malformed line and an ignored event, staged
with chunks of 2 units and with one chunk of all: the events and the quarantine (with each
record's input number) must be identical, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loopexp.core.keys import HashKey
from loopexp.events import staging
from loopexp.events.ingest import ingest

KEY = HashKey(b"test-secret-for-chunks", "test")
SAMPLES = Path(__file__).parent / "data" / "esp" / "mailgun"


def _export(path: Path) -> Path:
    lines = []
    for i, sample in enumerate(sorted(SAMPLES.glob("webhook_event_data_*.json"))):
        record = json.loads(sample.read_text(encoding="utf-8"))
        record["id"] = f"ev{i}"
        lines.append(json.dumps(record))
        if i == 2:
            lines.append('{"event": "opened", "id": ')  # malformed: quarantined in place
    lines.append(json.dumps({"event": "stored", "id": "ev-x", "timestamp": 1770327074.5}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _tables(out: Path) -> tuple[list[dict], list[dict]]:
    return (
        pq.read_table(out / "events.parquet").to_pylist(),
        pq.read_table(out / "quarantine.parquet").to_pylist(),
    )


def test_chunked_staging_gives_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    export = _export(tmp_path / "mailgun.ndjson")
    whole = ingest(export, tmp_path / "whole", key=KEY, fmt="mailgun")
    monkeypatch.setattr(staging, "CHUNK_UNITS", 2)
    chunked = ingest(export, tmp_path / "chunked", key=KEY, fmt="mailgun")
    assert whole.input_records == chunked.input_records > 8
    assert whole.quarantined == chunked.quarantined >= 2
    assert whole.quarantine_reasons == chunked.quarantine_reasons
    events, quarantine = _tables(tmp_path / "whole")
    assert (events, quarantine) == _tables(tmp_path / "chunked")
    numbers = [q["input_no"] for q in quarantine]
    assert len(set(numbers)) == len(numbers) and max(numbers) == whole.input_records
