"""Documented provider types that are not outcomes (SendGrid ``dropped``, SES ``Reject``, ...).

They stay in the quarantine (nothing lost, the invariant holds literally) with an ``ignored_type``
reason, are counted as ``ignored`` / ``ignored_by_type``, and do not fail ``--strict``; malformed
records and genuinely unknown types still do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.core.keys import HashKey
from loopexp.events.config import IngestConfig
from loopexp.events.ingest import ingest

ESP = Path(__file__).parent / "data" / "esp"
KEY = HashKey(b"test-secret-for-ingest", "test")


def _sendgrid(i: int, event: str) -> dict:
    return {
        "email": f"user{i}@example.com",
        "timestamp": 1_700_000_000 + i,
        "event": event,
        "sg_event_id": f"ev{i}",
        "sg_message_id": f"msg{i}.filter0001",
    }


def _export(path: Path, extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(_sendgrid(i, e)) for i, e in enumerate(["processed"] * 3 + ["dropped"])]
    lines += [json.dumps(_sendgrid(9, "delivered")), *extra_lines]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ingest_cli(tmp_path: Path, export: Path, monkeypatch, *extra: str):
    monkeypatch.setenv("LOOPEXP_HASH_KEY", "a-test-secret")
    out = tmp_path / "out"
    return CliRunner().invoke(app, ["ingest", str(export), "--out", str(out), "--strict", *extra])


def test_processed_and_dropped_pass_strict_and_are_counted(tmp_path: Path, monkeypatch) -> None:
    export = _export(tmp_path / "sendgrid.ndjson")
    res = _ingest_cli(tmp_path, export, monkeypatch, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["input_records"] == 5
    assert (summary["events"], summary["duplicates"], summary["quarantined"]) == (4, 0, 1)
    assert (summary["ignored"], summary["errors"]) == (1, 0)
    assert summary["ignored_by_type"] == {"sendgrid:dropped": 1}
    assert summary["by_type"] == {"delivered": 1, "send": 3}
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert list(quarantine["reason"]) == ["ignored_type: sendgrid:dropped"]
    assert "user3@example.com" not in quarantine["raw"][0]  # still hashed in the raw record
    # the table says "ignored (not an outcome)", not an error
    res = _ingest_cli(tmp_path, export, monkeypatch)
    assert res.exit_code == 0, res.output
    assert "ignored (not an outcome)" in res.output and "sendgrid:dropped" in res.output
    assert "quarantined (errors)" in res.output


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"email": "x@example.com", "event": "open", "timestamp"', "unparseable JSON"),
        (json.dumps(_sendgrid(7, "teleported")), "unmapped sendgrid event type 'teleported'"),
    ],
)
def test_malformed_or_unknown_still_fails_strict(
    tmp_path: Path, monkeypatch, bad_line: str, reason: str
) -> None:
    export = _export(tmp_path / "sendgrid.ndjson", [bad_line])
    res = _ingest_cli(tmp_path, export, monkeypatch, "--json")
    assert res.exit_code == 1, res.output
    summary = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    assert (summary["quarantined"], summary["ignored"], summary["errors"]) == (2, 1, 1)
    assert any(r.startswith(reason) for r in summary["quarantine_reasons"])
    assert "1 record(s) quarantined as errors" in res.output


def test_every_provider_names_its_ignored_types(tmp_path: Path) -> None:
    """One documented non-outcome type per provider, from the samples or built on them."""
    files = [
        ESP / "sendgrid" / "event_webhook_dropped.json",
        ESP / "ses" / "event_record_Reject.json",
        ESP / "ses" / "event_record_RenderingFailure.json",
    ]
    mailgun = json.loads((ESP / "mailgun" / "webhook_event_data_delivered.json").read_text())
    mailgun["event"] = "rejected"
    (tmp_path / "mailgun.json").write_text(json.dumps(mailgun))
    braze = json.loads(
        (ESP / "braze" / "currents_custom_http_users.messages.email.Send.json").read_text()
    )
    braze_events = braze.get("events", [braze])
    braze_events[0]["event_type"] = "users.messages.email.Abort"
    (tmp_path / "braze.json").write_text(json.dumps(braze_events[0]))
    postmark = {
        "RecordType": "SubscriptionChange",
        "MessageID": "m1",
        "Recipient": "john@example.com",
        "ChangedAt": "2024-01-01T00:00:00Z",
        "SuppressSending": False,
    }
    (tmp_path / "postmark.json").write_text(json.dumps(postmark))
    klaviyo = json.loads((ESP / "constructed" / "klaviyo_events_page.json").read_text())
    for item in klaviyo["included"]:
        if item["type"] == "metric":
            item["attributes"]["name"] = "Dropped Email"
    (tmp_path / "klaviyo.json").write_text(json.dumps(klaviyo))
    csv = tmp_path / "table.csv"
    csv.write_text("email,ts,event_type\na@example.com,1700000000,Skipped\n")
    summary = ingest(
        [*files, *(tmp_path / f"{n}.json" for n in ("mailgun", "braze", "postmark", "klaviyo"))],
        tmp_path / "out",
        key=KEY,
    )
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined
    assert summary.errors == 0, summary.quarantine_reasons
    n_klaviyo = len(klaviyo["data"])
    assert summary.ignored_by_type == {
        "braze:Abort": 1,
        "klaviyo:Dropped Email": n_klaviyo,
        "mailgun:rejected": 1,
        "postmark:SubscriptionChange/reactivation": 1,
        "sendgrid:dropped": 1,
        "ses:Reject": 1,
        "ses:Rendering Failure": 1,
    }
    table = ingest(
        csv, tmp_path / "t", key=KEY, config=IngestConfig(event_types={"Skipped": "ignore"})
    )
    assert (table.ignored_by_type, table.errors) == ({"csv:Skipped": 1}, 0)


@pytest.mark.parametrize("shape", ["ndjson", "array"])
def test_bulk_read_quarantines_with_the_raw_record_and_its_position(
    tmp_path: Path, shape: str, monkeypatch
) -> None:
    """Well-formed JSON with records to quarantine stays on the bulk (DuckDB) path: the raw
    record and its number in the file still reach the quarantine."""
    from loopexp.events.adapters import sendgrid

    def slow_path(*args, **kwargs):
        raise AssertionError("left the bulk path")

    monkeypatch.setattr(sendgrid, "stage_lines", slow_path)
    monkeypatch.setattr(sendgrid, "stage_texts", slow_path)
    records = [_sendgrid(i, "delivered") for i in range(6)]
    records[1]["event"] = "dropped"
    records[3]["timestamp"] = "soon"
    records[4]["event"] = "teleported"
    texts = [json.dumps(r) for r in records]
    path = tmp_path / f"export.{'ndjson' if shape == 'ndjson' else 'json'}"
    path.write_text("\n".join(texts) + "\n" if shape == "ndjson" else "[" + ",\n".join(texts) + "]")
    summary = ingest(path, tmp_path / "out", key=KEY, fmt="sendgrid")
    assert (summary.events, summary.quarantined, summary.ignored) == (3, 3, 1)
    q = pd.read_parquet(summary.quarantine_path)
    assert list(q["input_no"]) == [2, 4, 5]
    assert list(q["reason"]) == [
        "ignored_type: sendgrid:dropped",
        "unparseable or out-of-range timestamp",
        "unmapped sendgrid event type 'teleported'",
    ]
    for raw, i in zip(q["raw"], [1, 3, 4], strict=True):
        assert (
            json.loads(raw.replace(f"<address {_hashed(i)}>", f"user{i}@example.com"))
            == (records[i])
        )


def _hashed(i: int) -> str:
    from loopexp.core.keys import hash_address

    return hash_address(f"user{i}@example.com", KEY)


def test_files_larger_than_the_head_are_told_apart_by_it(tmp_path: Path, monkeypatch) -> None:
    """Shape and provider come from the file's head; a first record longer than the head (a
    one-line Mailgun page) is read whole."""
    from loopexp.events import staging

    monkeypatch.setattr(staging, "HEAD_BYTES", 300)
    sendgrid = _export(tmp_path / "sg.ndjson")
    assert sendgrid.stat().st_size > 300
    mailgun = json.loads((ESP / "mailgun" / "events_api_v2_page_accepted_legacy.json").read_text())
    (tmp_path / "mg.json").write_text(json.dumps(mailgun))  # one line, longer than the head
    assert (tmp_path / "mg.json").stat().st_size > 300
    summary = ingest([sendgrid, tmp_path / "mg.json"], tmp_path / "out", key=KEY)
    assert [f.format for f in summary.files] == ["sendgrid", "mailgun"]
    assert summary.files[0].input_records == 5 and summary.files[1].input_records >= 1
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined


def test_a_memory_limit_duckdb_cannot_read_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from loopexp.events.reader import IngestError

    export = _export(tmp_path / "sendgrid.ndjson")
    with pytest.raises(IngestError, match="not a size DuckDB understands"):
        ingest(export, tmp_path / "out", key=KEY, memory_limit="lots")
    monkeypatch.setenv("LOOPEXP_DUCKDB_MEMORY_LIMIT", "64MB")  # small: spills, same result
    summary = ingest(export, tmp_path / "out", key=KEY)
    assert (summary.events, summary.ignored) == (4, 1)


def test_under_a_small_memory_limit_ingest_gives_the_same_result(
    tmp_path: Path,
) -> None:
    import duckdb

    path = tmp_path / "big.ndjson"
    duckdb.sql(
        f"""COPY (SELECT 'user' || (i % 30000) || '@example.com' AS email,
                1700000000 + i AS timestamp,
                ['processed', 'delivered', 'open', 'click', 'dropped'][1 + (i % 5)::INT] AS event,
                'ev' || (i - (i % 997 = 5)::INT) AS sg_event_id,
                'msg' || (i % 30000) AS sg_message_id,
                CASE WHEN i % 5 = 3 THEN 'https://shop.example/' || (i % 7) END AS url,
                'Mozilla/5.0 (X11) Firefox/' || (i % 50) AS useragent
            FROM range(300000) t(i)) TO '{path}' (FORMAT json)"""
    )
    free = ingest(path, tmp_path / "free", key=KEY, fmt="sendgrid")
    capped = ingest(path, tmp_path / "capped", key=KEY, fmt="sendgrid", memory_limit="150MB")
    assert capped.ignored == free.ignored == 60000 and free.duplicates > 0
    for name in ("input_records", "events", "duplicates", "quarantined", "by_type"):
        assert getattr(capped, name) == getattr(free, name), name
    a, b = (
        pd.read_parquet(s.events_path).sort_values("event_id").reset_index(drop=True)
        for s in (free, capped)
    )
    pd.testing.assert_frame_equal(a, b)


def test_the_same_export_gives_the_same_bytes(tmp_path: Path) -> None:
    """`loopexp run` on an export folder is idempotent only if ingest's output is reproducible:
    its data fingerprint is the events file's hash. Large enough for DuckDB to use threads."""
    import hashlib

    import duckdb

    path = tmp_path / "big.ndjson"
    duckdb.sql(
        f"""COPY (SELECT 'user' || (i % 50000) || '@example.com' AS email,
                1700000000 + i AS timestamp,
                ['processed', 'delivered', 'open', 'click'][1 + (i % 4)::INT] AS event,
                'ev' || (i - (i % 997 = 5)::INT) AS sg_event_id,
                'msg' || (i % 50000) AS sg_message_id
            FROM range(600000) t(i)) TO '{path}' (FORMAT json)"""
    )
    digests = [
        hashlib.sha256(
            Path(ingest(path, tmp_path / f"o{k}", key=KEY, fmt="sendgrid").events_path).read_bytes()
        ).hexdigest()
        for k in range(2)
    ]
    assert digests[0] == digests[1]
