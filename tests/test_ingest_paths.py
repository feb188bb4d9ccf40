"""Property test: a SendGrid export gives the same result on every path through ingest.

Well-formed JSON goes through DuckDB in bulk (``read_json``, the raw text of quarantined records by
a positional second read); a file with a malformed line goes line by line in SQL; a gzipped or
BOM-prefixed file is split in Python. Generated exports of valid JSON (ignored and unknown event
types, timestamps in seconds, milliseconds, ISO text and nonsense, missing addresses, repeated
ids) must give the same events, duplicates and quarantine (reason, record number, raw record) on
each path, in NDJSON and as a JSON array.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopexp.core.keys import HashKey
from loopexp.events.adapters import sendgrid
from loopexp.events.ingest import ingest

KEY = HashKey(b"paths-secret", "test")
EVENTS = ["processed", "delivered", "open", "click", "bounce", "dropped", "group_resubscribe",
          "teleported"]  # fmt: skip
TIMESTAMPS = st.one_of(
    st.integers(1_600_000_000, 1_800_000_000),
    st.integers(1_600_000_000_000, 1_800_000_000_000),  # milliseconds
    st.just("2024-03-01T10:00:00Z"),
    st.just("soon"),
    st.just(5),  # out of range
)
RECORD = st.fixed_dictionaries(
    {
        "email": st.sampled_from(["a@example.com", "B@Example.com", "c@example.org", ""]),
        "timestamp": TIMESTAMPS,
        "event": st.sampled_from(EVENTS),
        "sg_event_id": st.one_of(st.sampled_from(["e1", "e2", "e3", "e4"]), st.just("")),
        "sg_message_id": st.sampled_from(["m1", "m2"]),
        "useragent": st.sampled_from(["Mozilla/5.0", "Barracuda", "Mozilla/5.0 (X11) Firefox"]),
        "url": st.sampled_from(["https://a.example/1", "https://a.example/2"]),
    }
)


def _result(path: Path, out: Path) -> tuple:
    summary = ingest(path, out, key=KEY, fmt="sendgrid")
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined
    events = pd.read_parquet(summary.events_path).sort_values("event_id").reset_index(drop=True)
    quarantine = pd.read_parquet(summary.quarantine_path)
    q = [
        (n, reason, json.loads(raw))
        for n, reason, raw in zip(
            quarantine["input_no"], quarantine["reason"], quarantine["raw"], strict=True
        )
    ]
    counts = (summary.events, summary.duplicates, summary.quarantined, summary.ignored)
    return counts, summary.quarantine_reasons, events, q


def _no_bulk(*args, **kwargs):
    return None


@pytest.mark.parametrize("shape", ["ndjson", "array"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(RECORD, min_size=1, max_size=12))
def test_bulk_line_and_python_paths_agree(shape: str, records: list[dict]) -> None:
    texts = [json.dumps(r) for r in records]
    body = "\n".join(texts) + "\n" if shape == "ndjson" else "[" + ",\n".join(texts) + "]"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        plain = tmp_path / "export.json"
        plain.write_text(body)
        staged: list[int | None] = []
        real = sendgrid.stage_fast

        def recorded(*args, **kwargs):
            staged.append(real(*args, **kwargs))
            return staged[-1]

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sendgrid, "stage_fast", recorded)
            bulk = _result(plain, tmp_path / "bulk")
        assert staged == [len(records)]  # valid JSON stays on the bulk path, whatever it holds
        zipped = tmp_path / "export.json.gz"
        zipped.write_bytes(gzip.compress(body.encode()))
        python = _result(zipped, tmp_path / "python")
        results = [bulk, python]
        if shape == "ndjson":
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(sendgrid, "stage_fast", _no_bulk)
                results.append(_result(plain, tmp_path / "lines"))
        for other in results[1:]:
            assert other[0] == bulk[0] and other[1] == bulk[1]
            pd.testing.assert_frame_equal(other[2], bulk[2])
            assert [(n, r) for n, r, _ in other[3]] == [(n, r) for n, r, _ in bulk[3]]
        # every quarantined raw record is the file's record (addresses masked) at its number
        for n, _, raw in bulk[3]:
            original = records[n - 1]
            assert raw.keys() == original.keys()
            assert {k: v for k, v in raw.items() if k != "email"} == {
                k: v for k, v in original.items() if k != "email"
            }
