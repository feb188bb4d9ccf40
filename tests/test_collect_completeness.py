"""Completeness of a raw webhook log: hours not final (retry windows), gaps, a missing arm."""

from __future__ import annotations

import json
import math
import time

from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.core.keys import HashKey
from loopexp.events import completeness, rawlog
from loopexp.events.ingest import ingest
from tests import _collect_signing as sig

KEY = HashKey(b"test-secret-for-collect", "test")


def _raw_log(folder, start: float) -> None:
    """Four event hours; the third has only variant A (B's arm lost); nothing received in it."""
    records = []
    for h in range(4):
        events = []
        for i in range(24):
            variant = "A" if i % 2 else "B"
            if h == 2 and variant == "B":
                continue
            events.append(
                sig.sendgrid_event(i, timestamp=int(start + h * 3600 + i), variant=variant)
            )
        received = start + h * 3600 + 60 if h != 2 else start + 3 * 3600 + 120
        records.append(rawlog.encode("sendgrid", received, {}, sig.sendgrid_body(events)))
    folder.mkdir()
    (folder / f"t-p1-20260101T000000Z-000001{rawlog.SEALED}").write_bytes(b"".join(records))


def test_hours_not_final_gaps_and_a_missing_arm(tmp_path):
    start = math.floor(time.time() / 3600) * 3600 - 5 * 3600
    _raw_log(tmp_path / "raw", start)
    summary = ingest(tmp_path / "raw", tmp_path / "out", key=KEY)
    assert summary.events == 24 * 3 + 12
    report = json.loads((tmp_path / "out" / completeness.FILE).read_text())
    assert report["providers"] == ["sendgrid"] and report["retry_window_hours"] == 24
    assert len(report["not_final_hours"]) == 4  # SendGrid may still retry any of them
    assert len(report["receipt_gaps"]) == 1  # hour 2: nothing received
    assert len(report["imbalanced_hours"]) == 1
    (hour2,) = [h for h in report["hours"] if h["missing_variants"]]
    assert hour2["counts"] == {"A": 12, "B": 0} and hour2["missing_variants"] == ["B"]
    assert any("not final" in w for w in summary.warnings)
    # a day later every hour is final; the gap and the missing arm stay flagged
    later = completeness.completeness(
        sorted((tmp_path / "raw").iterdir()), summary.events_path, now=start + 30 * 3600
    )
    assert later["not_final_hours"] == [] and later["imbalanced_hours"]
    # ingest of exports only writes no report (and removes a stale one)
    (tmp_path / "export.json").write_text(json.dumps([sig.sendgrid_event(1)]))
    ingest(tmp_path / "export.json", tmp_path / "out", key=KEY)
    assert not (tmp_path / "out" / completeness.FILE).exists()


def test_ingest_command_prints_the_raw_log_warnings(tmp_path, monkeypatch):
    start = math.floor(time.time() / 3600) * 3600 - 5 * 3600
    _raw_log(tmp_path / "raw", start)
    monkeypatch.setenv("LOOPEXP_HASH_KEY", "test-secret-for-collect-cli")
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "raw"), "--out", str(tmp_path / "out")], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "not final yet" in result.output and "no webhook received" in result.output
