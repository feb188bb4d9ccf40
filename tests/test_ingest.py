"""``loopexp ingest`` on the providers' own published payloads (tests/data/esp), rule by rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.core.keys import EMAIL_PATTERN, HashKey, hash_address
from loopexp.events.adapters.base import RecordError, to_utc
from loopexp.events.config import IngestConfig
from loopexp.events.ingest import ingest
from loopexp.events.reader import IngestError
from loopexp.events.schema import EVENT_SCHEMA
from loopexp.events.summary import IngestSummary

ESP = Path(__file__).parent / "data" / "esp"
KEY = HashKey(b"test-secret-for-ingest", "test")


def run(paths, tmp_path: Path, **kwargs) -> tuple[IngestSummary, pd.DataFrame, pd.DataFrame]:
    summary = ingest(paths, tmp_path / "out", key=KEY, **kwargs)
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined
    events = pd.read_parquet(summary.events_path)
    quarantine = pd.read_parquet(summary.quarantine_path)
    assert len(events) == summary.events and len(quarantine) == summary.quarantined
    return summary, events, quarantine


def one(events: pd.DataFrame) -> pd.Series:
    assert len(events) == 1, events
    return events.iloc[0]


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1513299569, datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)),
        (1591726752372, datetime(2020, 6, 9, 18, 19, 12, 372000, tzinfo=UTC)),  # SendGrid ms
        ("1513299569", datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)),
        (1770327074.5549328, datetime(2026, 2, 5, 21, 31, 14, 554933, tzinfo=UTC)),
        ("2017-08-09T22:00:19.652Z", datetime(2017, 8, 9, 22, 0, 19, 652000, tzinfo=UTC)),
        ("2014-08-01T13:28:10.2735393-04:00", datetime(2014, 8, 1, 17, 28, 10, 273539, tzinfo=UTC)),
        ("2022-11-08T01:23:45+00:00", datetime(2022, 11, 8, 1, 23, 45, tzinfo=UTC)),
    ],
)
def test_every_timestamp_format_becomes_utc(value, expected) -> None:
    assert to_utc(value) == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", True, 0, -5, 99999999999999999999, "nan"])
def test_bad_timestamps_are_refused(value) -> None:
    with pytest.raises(RecordError):
        to_utc(value)


# --- the providers' samples -----------------------------------------------------------------


def test_all_sendgrid_samples_with_the_invariant(tmp_path: Path) -> None:
    summary, events, quarantine = run(ESP / "sendgrid", tmp_path)
    assert summary.input_records == 31
    assert set(quarantine["reason"]) == {
        "ignored_type: sendgrid:dropped",
        "ignored_type: sendgrid:group_resubscribe",
        "ignored_type: sendgrid:account_status_change",
    }
    assert (summary.ignored, summary.errors) == (summary.quarantined, 0)
    # the legacy array repeats the placeholder id "sg_event_id": one event, the rest duplicates
    assert (events["event_id"] == "sg_event_id").sum() == 1
    assert summary.duplicates >= 9
    assert list(pq.read_schema(summary.events_path)) == list(EVENT_SCHEMA)


def test_sendgrid_milliseconds_machine_open_and_ab_version(tmp_path: Path) -> None:
    _, ev, _ = run(ESP / "sendgrid" / "marketing_single_send_open.json", tmp_path / "ms")
    assert one(ev)["ts"] == pd.Timestamp("2020-06-09T18:19:12.372Z")
    assert one(ev)["campaign_id"] == "sendgrid_singlesend_id"
    _, ev, _ = run(ESP / "sendgrid" / "event_webhook_open.json", tmp_path / "open")
    assert one(ev)["is_machine_open"] is False or not one(ev)["is_machine_open"]
    _, ev, _ = run(ESP / "sendgrid" / "marketing_campaign_ab_test_processed_object.json", tmp_path)
    row = one(ev)
    assert (row["event_type"], row["variant_id"], row["campaign_id"]) == ("send", "B", "23314")
    assert row["recipient_key"] == hash_address("tadpole_0010@stbase-018.sjc1.sendgrid.net", KEY)


def test_sendgrid_bounce_blocked_is_soft_and_custom_arg_variant(tmp_path: Path) -> None:
    _, ev, _ = run(ESP / "sendgrid" / "event_webhook_bounce_blocked.json", tmp_path / "b")
    assert (one(ev)["event_type"], one(ev)["bounce_class"]) == ("bounce_soft", "Invalid Address")
    _, ev, _ = run(
        ESP / "sendgrid" / "event_webhook_unique_args_click.json",
        tmp_path / "u",
        config=IngestConfig(variant_field="template", variant_map={"welcome": "control"}),
    )
    assert one(ev)["variant_id"] == "control"
    assert one(ev)["event_id"].startswith("h")  # no sg_event_id: content hash


@pytest.mark.parametrize(
    ("stamp", "valid"),
    [
        (946684799, False),  # 1999-12-31 23:59:59 as epoch seconds
        ("1999-12-31T23:59:59Z", False),  # the same instant as ISO text
        ("2100-01-01T00:00:00Z", False),
        (946684800, True),
        ("2000-01-01T00:00:00Z", True),
        ("2099-12-31T23:59:59Z", True),
    ],
)
def test_sendgrid_time_range_is_the_same_for_epoch_numbers_and_iso_text(
    tmp_path: Path, stamp, valid
) -> None:
    """SendGrid's bulk path range-checked epoch numbers only: ISO text from 1999 became an event."""
    record = {"email": "a@example.com", "timestamp": stamp, "event": "open", "sg_event_id": "e1"}
    (tmp_path / "sg.json").write_text(json.dumps(record) + "\n")
    summary, _, quarantine = run(tmp_path / "sg.json", tmp_path, fmt="sendgrid")
    assert (summary.events, summary.quarantined) == ((1, 0) if valid else (0, 1))
    if not valid:
        assert quarantine["reason"].tolist() == ["unparseable or out-of-range timestamp"]


def test_sendgrid_array_and_ndjson_read_the_same(tmp_path: Path) -> None:
    records = json.loads(
        (ESP / "sendgrid" / "legacy_docs_repo_all_event_types_array.json").read_text()
    )
    for i, r in enumerate(records):
        r["sg_event_id"] = f"id{i}"
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.ndjson").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    _, a, _ = run(tmp_path / "a.json", tmp_path / "A")
    _, b, _ = run(tmp_path / "b.ndjson", tmp_path / "B")
    pd.testing.assert_frame_equal(a, b)


def test_mailgun_webhooks_and_events_api_pages(tmp_path: Path) -> None:
    files = sorted((ESP / "mailgun").glob("*event*.json"))
    summary, ev, _ = run(files, tmp_path)
    assert summary.quarantined == 0 and summary.events == 10
    by_id = ev.set_index("event_id")
    assert by_id.loc["2kFItcrLQuKTdp-Ia2Xr7w", "event_type"] == "bounce_hard"
    assert by_id.loc["YusK9KhoTwe2C00iRxsEqQ", "event_type"] == "deferred"
    assert by_id.loc["q7DMpbLFRKW1QuiLC9XV4Q", "ts"] == pd.Timestamp("2026-02-05T21:31:14.554933Z")
    assert summary.by_type["send"] == 2  # accepted: webhook + Events API page item


def test_mailgun_bot_flag_and_user_variable_variant(tmp_path: Path) -> None:
    body = json.loads((ESP / "mailgun" / "webhook_event_data_opened.json").read_text())
    body["client-info"]["bot"] = "apple"
    body["user-variables"] = {"variant": "personal"}
    (tmp_path / "hook.json").write_text(json.dumps({"signature": {}, "event-data": body}))
    summary, ev, _ = run(tmp_path / "hook.json", tmp_path)
    row = one(ev)
    assert (row["is_machine_open"], row["bot_reason"], row["variant_id"]) == (
        True,
        "provider_flag",
        "personal",
    )
    assert summary.removed_by_rule == {"provider_flag": {"personal": {"open": 1, "click": 0}}}


def test_ses_records_and_sns_envelope(tmp_path: Path) -> None:
    files = [f for f in sorted((ESP / "ses").glob("event_record_*.json"))]
    summary, ev, q = run(files, tmp_path / "ses")
    assert set(q["reason"]) == {
        "ignored_type: ses:Reject",
        "ignored_type: ses:Rendering Failure",
    }
    opened = one(ev[ev["event_type"] == "open"])
    assert opened["recipient_key"] == hash_address("recipient@example.com", KEY)
    assert opened["ts"] == pd.Timestamp("2017-08-09T22:00:19.652Z")
    # the same Open record inside an SNS notification, twice (an SNS retry keeps MessageId)
    envelope = json.loads((ESP / "ses" / "sns_http_notification_envelope_example.json").read_text())
    record = json.loads((ESP / "ses" / "event_record_Open.json").read_text())
    record["mail"]["tags"]["variant"] = ["urgency"]
    envelope["Message"] = json.dumps(record)
    (tmp_path / "sns.ndjson").write_text(json.dumps(envelope) + "\n" + json.dumps(envelope) + "\n")
    summary, ev, _ = run(tmp_path / "sns.ndjson", tmp_path / "sns")
    assert (summary.events, summary.duplicates) == (1, 1)
    assert one(ev)["variant_id"] == "urgency"


def test_ses_open_to_several_recipients_is_quarantined(tmp_path: Path) -> None:
    record = json.loads((ESP / "ses" / "event_record_Open.json").read_text())
    record["mail"]["destination"] = ["a@example.com", "b@example.com"]
    (tmp_path / "open.json").write_text(json.dumps(record))
    summary, _, q = run(tmp_path / "open.json", tmp_path)
    assert summary.quarantined == 1 and "cannot tell which one" in q["reason"][0]


def test_postmark_legacy_bounce_and_constructed_webhooks(tmp_path: Path) -> None:
    _, ev, _ = run(ESP / "postmark", tmp_path / "legacy")
    row = one(ev)
    assert (row["event_type"], row["bounce_class"]) == ("bounce_hard", "HardBounce")
    assert row["ts"] == pd.Timestamp("2014-08-01T17:28:10.273539Z")
    summary, ev, _ = run(ESP / "constructed" / "postmark_open_click_delivery.ndjson", tmp_path)
    assert summary.by_type == {"click": 1, "delivered": 1, "open": 1, "unsubscribe": 1}
    assert set(ev["variant_id"].dropna()) == {"personal"}


def test_mailchimp_sdk_samples_and_constructed_exports(tmp_path: Path) -> None:
    files = [
        ESP / "mailchimp" / f"sdk_wire_test_reports_{n}_response.json"
        for n in ("email_activity", "open_detail_member", "unsubscribed", "sent_to")
    ]
    summary, ev, q = run(files, tmp_path / "sdk")
    # email-activity's placeholder item {} has no action; sent-to has no send time
    assert sorted(q["reason"]) == ["missing timestamp", "unmapped mailchimp action None"]
    opened = one(ev[ev["event_type"] == "open"])
    assert (opened["is_machine_open"], opened["bot_reason"]) == (True, "provider_flag")
    summary, ev, q = run(ESP / "constructed" / "mailchimp_activity.csv", tmp_path / "csv")
    assert summary.by_type == {"bounce_hard": 1, "click": 1, "open": 1}
    assert list(q["reason"]) == ["unmapped mailchimp action 'forward'"]
    _, ev, _ = run(ESP / "constructed" / "mailchimp_sent_to_with_send_time.json", tmp_path / "st")
    assert (one(ev)["event_type"], one(ev)["variant_id"]) == ("delivered", "a")


def test_braze_currents_flags_and_variation(tmp_path: Path) -> None:
    for name, event_type in [
        ("Open", "open"),
        ("Click", "click"),
        ("SoftBounce", "bounce_soft"),
        ("MarkAsSpam", "complaint"),
        ("Send", "send"),
        ("Delivery", "delivered"),
        ("Bounce", "bounce_hard"),
        ("Unsubscribe", "unsubscribe"),
    ]:
        path = ESP / "braze" / f"currents_custom_http_users.messages.email.{name}.json"
        _, ev, _ = run(path, tmp_path / name)
        row = one(ev)
        assert row["event_type"] == event_type
        assert row["ts"] == pd.Timestamp(2033802504, unit="s", tz="UTC")
        assert row["variant_id"] == "f47ac10b-58cc-4372-a567-0e02b2c3d479"
        if name == "Open":
            assert (row["is_machine_open"], row["bot_reason"]) == (True, "provider_flag")
        if name == "Click":
            assert (row["is_bot_click"], row["bot_reason"]) == (True, "provider_flag")


def test_klaviyo_page_with_included_metrics_and_profiles(tmp_path: Path) -> None:
    summary, ev, _ = run(ESP / "constructed" / "klaviyo_events_page.json", tmp_path)
    assert summary.by_type == {"click": 1, "delivered": 1, "open": 1}
    assert set(ev["recipient_key"]) == {hash_address("sarah.mason@example.com", KEY)}
    assert summary.machine_opens == 1
    # the click has a null timestamp and falls back to the ISO datetime
    click = one(ev[ev["event_type"] == "click"])
    assert click["ts"] == pd.Timestamp("2023-11-14T22:30:00Z")


def test_plain_csv_with_a_column_mapping(tmp_path: Path) -> None:
    (tmp_path / "ev.csv").write_text(
        "Mail,When,What,Arm\nx@example.com,2024-03-01T10:00:00Z,Delivered,b\n"
        "x@example.com,2024-03-01T11:00:00Z,Opened,b\ny@example.com,not a time,Opened,a\n"
    )
    config = IngestConfig(
        columns={"email": "Mail", "ts": "When", "event_type": "What", "variant_id": "Arm"},
        event_types={"Delivered": "delivered", "Opened": "open"},
    )
    summary, _ev, q = run(tmp_path / "ev.csv", tmp_path, config=config)
    assert (summary.events, summary.quarantined) == (2, 1)
    assert "unparseable timestamp" in q["reason"][0]
    with pytest.raises(IngestError, match=r"ingest\.columns"):
        ingest(tmp_path / "ev.csv", tmp_path / "x", key=KEY)


def test_same_export_twice_is_all_duplicates(tmp_path: Path) -> None:
    files = sorted((ESP / "mailgun").glob("webhook_event_data_*.json"))
    first, _, _ = run(files, tmp_path / "a")
    copies = tmp_path / "copies"
    copies.mkdir()
    for f in files:
        (copies / f.name).write_bytes(f.read_bytes())
    twice, _, _ = run([*files, copies], tmp_path / "b")
    assert twice.events == first.events and twice.duplicates == first.events


# --- machine opens and bot clicks -----------------------------------------------------------


def _sg(email, event, ts, variant="control", **extra) -> dict:
    return {
        "email": email,
        "event": event,
        "timestamp": ts,
        "sg_message_id": f"m-{email}",
        "variant": variant,
        **extra,
    }


def test_each_bot_rule_with_its_reason_and_per_variant_counts(tmp_path: Path) -> None:
    t0 = 1_700_000_000
    human_ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120"
    recs = []
    for i, variant in enumerate(["control", "personal"]):
        e = f"p{i}@example.com"
        recs += [
            _sg(e, "delivered", t0, variant),
            _sg(e, "open", t0 + 1, variant, useragent=human_ua),  # open_soon_after_delivery
            _sg(e, "click", t0 + 5, variant, useragent=human_ua, url="https://x/1"),
        ]
    recs += [
        _sg("q@example.com", "delivered", t0),
        _sg("q@example.com", "open", t0 + 600, useragent="Mozilla/5.0"),  # apple_proxy
        _sg("q@example.com", "open", t0 + 700, useragent=human_ua, sg_machine_open=True),
        _sg(
            "q@example.com",
            "click",
            t0 + 900,
            useragent="Barracuda Sentinel (EE)",
            url="https://x/1",
        ),
        _sg("r@example.com", "delivered", t0),
        *[
            _sg("r@example.com", "click", t0 + 3600, useragent=human_ua, url=f"https://x/{k}")
            for k in range(3)
        ],  # link_burst
        _sg("h@example.com", "delivered", t0),
        _sg("h@example.com", "open", t0 + 3600, useragent=human_ua, ip="203.0.113.5"),
        _sg("h@example.com", "click", t0 + 3700, useragent=human_ua, url="https://x/1"),
    ]
    for k, r in enumerate(recs):
        r["sg_event_id"] = f"e{k}"
    (tmp_path / "ev.ndjson").write_text("\n".join(json.dumps(r) for r in recs))
    summary, ev, _ = run(tmp_path / "ev.ndjson", tmp_path)
    assert summary.removed_by_rule == {
        "open_soon_after_delivery": {
            "control": {"open": 1, "click": 0},
            "personal": {"open": 1, "click": 0},
        },
        "click_soon_after_delivery": {
            "control": {"open": 0, "click": 1},
            "personal": {"open": 0, "click": 1},
        },
        "apple_proxy": {"control": {"open": 1, "click": 0}},
        "provider_flag": {"control": {"open": 1, "click": 0}},
        "scanner_user_agent": {"control": {"open": 0, "click": 1}},
        "link_burst": {"control": {"open": 0, "click": 3}},
    }
    human = ev[ev["recipient_key"] == hash_address("h@example.com", KEY)]
    assert not human["is_machine_open"].eq(True).any()
    assert not human["is_bot_click"].eq(True).any()
    assert (summary.machine_opens, summary.bot_clicks) == (4, 6)
    # thresholds are configurable: with the timing and burst rules off, only flags/UA/IP remain
    config = IngestConfig(rules=["provider_flag", "scanner_user_agent", "apple_proxy"])
    summary, _, _ = run(tmp_path / "ev.ndjson", tmp_path / "fewer", config=config)
    assert (summary.machine_opens, summary.bot_clicks) == (2, 1)
    config = IngestConfig(open_after_delivery_s=0.5, click_after_delivery_s=2)
    summary, _, _ = run(tmp_path / "ev.ndjson", tmp_path / "tight", config=config)
    assert "open_soon_after_delivery" not in summary.removed_by_rule
    assert "click_soon_after_delivery" not in summary.removed_by_rule


def test_per_variant_counts_from_the_assignment_when_events_carry_none(tmp_path: Path) -> None:
    recs = [
        {
            "email": "a@example.com",
            "event": "open",
            "timestamp": 1_700_000_000,
            "useragent": "Mozilla/5.0",
            "sg_event_id": "x",
        }
    ]
    (tmp_path / "ev.json").write_text(json.dumps(recs))
    pd.DataFrame(
        {
            "recipient_key": [hash_address("a@example.com", KEY)],
            "segment": ["new"],
            "variant_id": ["personal"],
        }
    ).to_parquet(tmp_path / "assignment.parquet")
    summary, _, _ = run(tmp_path / "ev.json", tmp_path, assignment=tmp_path / "assignment.parquet")
    assert summary.removed_by_rule == {"apple_proxy": {"personal": {"open": 1, "click": 0}}}


# --- nothing lost, nothing leaked, clear errors ---------------------------------------------


def test_quarantine_keeps_the_raw_record_with_addresses_hashed(tmp_path: Path) -> None:
    (tmp_path / "ev.ndjson").write_bytes(
        b'{"email": "carol.jones@example.org", "event": "open", "timestamp": "soon"}\n'
        b'{"email": "dave@example.org", "event": "open", "timestamp": 1700000000, "sg_event_id"\n'
        b'{"email": "\xff\xfe@example.org", "event": "open", "timestamp": 1700000000}\n'
        b'{"email": "erin@example.org", "event": "open", "timestamp": 1700000000}\n'
    )
    summary, _ev, q = run(tmp_path / "ev.ndjson", tmp_path)
    assert (summary.events, summary.quarantined) == (1, 3)
    assert list(q["input_no"]) == [1, 2, 3]  # file order
    assert q["reason"][0] == "unparseable or out-of-range timestamp"
    assert q["reason"][1].startswith("unparseable JSON")
    assert q["reason"][2] == "not valid UTF-8 (re-export the file as UTF-8)"
    text = " ".join(q["raw"]) + " ".join(q["reason"])
    assert "carol.jones@example.org" not in text and "dave@example.org" not in text
    assert hash_address("carol.jones@example.org", KEY) in text
    assert not EMAIL_PATTERN.search(" ".join(q["raw"]))


def test_strict_exits_1_and_bad_files_exit_2_without_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOOPEXP_HASH_KEY", "a-test-secret")
    runner = CliRunner()
    # the SendGrid samples' 5 quarantined records are all ignored types (dropped, ...): no error
    res = runner.invoke(
        app, ["ingest", str(ESP / "sendgrid"), "--out", str(tmp_path / "o"), "--strict", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["quarantined"] == 5
    # the SES samples hold an SNS envelope without an SES record: an error
    res = runner.invoke(
        app, ["ingest", str(ESP / "ses"), "--out", str(tmp_path / "s"), "--strict", "--json"]
    )
    assert res.exit_code == 1, res.output
    assert json.loads(res.stdout[: res.stdout.rindex("}") + 1])["errors"] == 1
    (tmp_path / "what.json").write_text('{"hello": "world"}')
    res = runner.invoke(app, ["ingest", str(tmp_path / "what.json"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "what.json" in res.output and "--format" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["ingest", str(tmp_path / "nope.json"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "nope.json" in res.output and "no such file" in res.output
    monkeypatch.delenv("LOOPEXP_HASH_KEY")
    res = runner.invoke(app, ["ingest", str(ESP / "postmark"), "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "LOOPEXP_HASH_KEY" in res.output


def test_spec_ingest_section_sets_the_rules(tmp_path: Path, monkeypatch) -> None:
    from loopexp.design.spec import load_spec

    demo = (Path(__file__).parent.parent / "experiments" / "subject_line_demo.yaml").read_text()
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        demo + "ingest:\n  variant_field: arm\n  rules: [provider_flag]\n"
        "  open_after_delivery_s: 5\n"
    )
    spec = load_spec(spec_path)
    assert spec.ingest == IngestConfig(
        variant_field="arm", rules=["provider_flag"], open_after_delivery_s=5
    )
    recs = [
        {
            "email": "a@example.com",
            "event": "open",
            "timestamp": 1_700_000_000,
            "useragent": "Mozilla/5.0",
            "sg_event_id": "x",
            "arm": "personal",
        }
    ]
    (tmp_path / "ev.json").write_text(json.dumps(recs))
    monkeypatch.setenv("LOOPEXP_HASH_KEY", "a-test-secret")
    res = CliRunner().invoke(
        app,
        [
            "ingest",
            str(tmp_path / "ev.json"),
            "--out",
            str(tmp_path / "o"),
            "--spec",
            str(spec_path),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["machine_opens"] == 0  # apple_proxy is off in this spec
    assert pd.read_parquet(tmp_path / "o" / "events.parquet")["variant_id"][0] == "personal"


def test_run_with_raw_exports_needs_the_hash_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LOOPEXP_HASH_KEY", raising=False)
    monkeypatch.delenv("LOOPEXP_HASH_KEY_FILE", raising=False)
    demo = Path(__file__).parent.parent / "experiments" / "subject_line_demo.yaml"
    res = CliRunner().invoke(
        app,
        [
            "run",
            str(demo),
            "--events",
            str(ESP / "sendgrid"),
            "--events-format",
            "sendgrid",
            "--assignment",
            str(tmp_path / "a.parquet"),
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'db'}",
        ],
    )
    assert res.exit_code == 2 and "LOOPEXP_HASH_KEY" in res.output
    res = CliRunner().invoke(
        app,
        [
            "run",
            str(demo),
            "--events",
            str(ESP / "sendgrid"),
            "--events-format",
            "nonsense",
            "--assignment",
            str(tmp_path / "a.parquet"),
            "--out",
            str(tmp_path / "out2"),
        ],
    )
    assert res.exit_code == 2 and "unknown format 'nonsense'" in res.output


def test_canonical_parquet_passes_through_unchanged_in_count(tmp_path: Path) -> None:
    from loopexp.design.spec import load_spec
    from loopexp.sim.simulate import DEMO_EFFECTS, simulate_campaign

    spec = load_spec(Path(__file__).parent.parent / "experiments" / "subject_line_demo.yaml")
    events_path, _ = simulate_campaign(spec, 2000, DEMO_EFFECTS, seed=5).write(tmp_path / "sim")
    original = pd.read_parquet(events_path)
    summary, ev, _ = run(events_path, tmp_path, fmt="canonical")
    assert summary.files[0].format == "canonical"
    assert (summary.events, summary.quarantined) == (len(original), 0)
    assert set(ev["recipient_key"]) == set(original["recipient_key"])  # already keys: not hashed
    assert summary.by_type == original["event_type"].value_counts().sort_index().to_dict()


def test_duplicate_choice_does_not_depend_on_threads(tmp_path: Path) -> None:
    """Same id, same position, different content: the kept record is a function of content."""
    recs = [
        {
            "email": f"u{i % 50}@example.com",
            "event": ["open", "delivered"][i % 2],
            "timestamp": 1_700_000_000 + i,
            "sg_event_id": f"e{i // 2}",
        }
        for i in range(400)
    ]
    (tmp_path / "ev.ndjson").write_text("\n".join(json.dumps(r) for r in recs))
    frames = [run(tmp_path / "ev.ndjson", tmp_path / f"r{k}")[1] for k in range(3)]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(
            frames[0].sort_values("event_id").reset_index(drop=True),
            frame.sort_values("event_id").reset_index(drop=True),
        )
