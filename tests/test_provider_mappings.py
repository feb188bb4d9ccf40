"""Provider events mapped as the providers mean them (issue #31).

Postmark: every bounce ``Type`` / ``TypeCode`` of Postmark's published table mapped deliberately
(type by type, against a table written out here, not read from the adapter); a
``SubscriptionChange`` is an unsubscribe only for a manual suppression; inbound mail is ignored.
SES over SNS: the subscription / unsubscribe confirmations and SES's topic-validation notification
are control messages, ignored and skipped by format detection; a record without its own event time
takes the SNS envelope's; inbound mail (``Received``) is ignored.

Payload shapes: Postmark's webhook bodies with the fields of Postmark's official SDK models
(``postmark.js``: ``Bounce``, ``SubscriptionChangeWebhook``, ``InboundWebhook``) and the bounce
body of Postmark's blog (``tests/data/esp/postmark/``); SES records, SNS bodies and the receiving
notification as AWS documents them (``tests/data/esp/ses/``, sources in its SOURCES.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.core.keys import HashKey
from loopexp.events.adapters import postmark, registry, ses
from loopexp.events.adapters.base import Context, IgnoredTypeError, RecordError
from loopexp.events.config import IngestConfig
from loopexp.events.ingest import ingest

ESP = Path(__file__).parent / "data" / "esp"
KEY = HashKey(b"provider-mappings-secret", "test")
CONFIG = IngestConfig()

# --- Postmark ---------------------------------------------------------------------------------

#: Postmark's bounce types table (Bounce API reference, "bounce types"; the same codes as the
#: ``BounceTypeCode`` enum of Postmark's official Node client) and what each must become:
#: a canonical event type, ``ignored`` (not an outcome of the send) or ``error`` (quarantined).
POSTMARK_TABLE: list[tuple[str, int, str]] = [
    ("HardBounce", 1, "bounce_hard"),
    ("Transient", 2, "bounce_soft"),
    ("Unsubscribe", 16, "unsubscribe"),
    ("Subscribe", 32, "ignored"),
    ("AutoResponder", 64, "ignored"),
    ("AddressChange", 128, "ignored"),
    ("DnsError", 256, "bounce_soft"),
    ("SpamNotification", 512, "bounce_soft"),
    ("OpenRelayTest", 1024, "ignored"),
    ("Unknown", 2048, "error"),
    ("SoftBounce", 4096, "bounce_soft"),
    ("VirusNotification", 8192, "bounce_soft"),
    ("ChallengeVerification", 16384, "ignored"),
    ("BadEmailAddress", 100000, "bounce_hard"),
    ("SpamComplaint", 100001, "complaint"),
    ("ManuallyDeactivated", 100002, "ignored"),
    ("Unconfirmed", 100003, "ignored"),
    ("Blocked", 100006, "bounce_soft"),
    ("SMTPApiError", 100007, "ignored"),
    ("InboundError", 100008, "ignored"),
    ("DMARCPolicy", 100009, "bounce_soft"),
    ("TemplateRenderingFailed", 100010, "ignored"),
]


def postmark_bounce(i: int, type_: str | None, code: int | None) -> dict:
    """A bounce webhook body (Postmark's ``Bounce`` model plus ``Metadata``)."""
    body = {
        "RecordType": "Bounce",
        "ID": 4323372036854775800 + i,
        "Type": type_,
        "TypeCode": code,
        "Name": type_,
        "Tag": "Test",
        "MessageID": f"883953f4-6105-42a2-a16a-77a8eac7{i:04d}",
        "ServerID": 23,
        "Description": "The server was unable to deliver your message.",
        "Details": "Test bounce details",
        "Email": f"john{i}@example.com",
        "From": "sender@example.com",
        "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Test subject",
        "Content": "Test content",
        "MessageStream": "outbound",
        "Metadata": {"variant": "a"},
    }
    return {k: v for k, v in body.items() if v is not None}


def subscription_change(i: int, suppress: bool, reason: str | None) -> dict:
    """A SubscriptionChange webhook body (Postmark's ``SubscriptionChangeWebhook`` model)."""
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": f"883953f4-6105-42a2-a16a-77a8eac7{i:04d}",
        "ServerID": 23,
        "MessageStream": "broadcast",
        "ChangedAt": "2020-02-01T10:53:34.416071Z",
        "Recipient": f"john{i}@example.com",
        "Origin": "Recipient",
        "SuppressSending": suppress,
        "SuppressionReason": reason,
        "Tag": "my-tag",
        "Metadata": {"variant": "a"},
    }


def postmark_inbound() -> dict:
    """An inbound-mail webhook body (Postmark's ``InboundWebhook`` model)."""
    return {
        "From": "myUser@theirDomain.com",
        "MessageStream": "inbound",
        "FromName": "My User",
        "FromFull": {"Email": "myUser@theirDomain.com", "Name": "John Doe", "MailboxHash": ""},
        "To": "451d9b70cf9364d23ff6f9d51d870251569e+ahoy@inbound.postmarkapp.com",
        "ToFull": [
            {
                "Email": "451d9b70cf9364d23ff6f9d51d870251569e+ahoy@inbound.postmarkapp.com",
                "Name": "",
                "MailboxHash": "ahoy",
            }
        ],
        "Cc": "",
        "CcFull": [],
        "Bcc": "",
        "BccFull": [],
        "ReplyTo": "myUsersReplyAddress@theirDomain.com",
        "OriginalRecipient": "451d9b70cf9364d23ff6f9d51d870251569e+ahoy@inbound.postmarkapp.com",
        "Subject": "This is an inbound message",
        "MessageID": "22c74902-a0c1-4511-804f-341342852c90",
        "Date": "Thu, 5 Apr 2012 16:59:01 +0200",
        "MailboxHash": "ahoy",
        "TextBody": "[ASCII]",
        "HtmlBody": "[HTML]",
        "StrippedTextReply": "Ok, thanks for letting me know!",
        "Tag": "",
        "Headers": [{"Name": "X-Spam-Checker-Version", "Value": "SpamAssassin 3.3.1"}],
        "Attachments": [],
    }


def _outcome(adapter, record: dict) -> str:
    """``event_type``, ``ignored: <reason>`` or ``error: <reason>`` of one record."""
    try:
        (staged,) = adapter.normalize(record, Context(), CONFIG)
    except IgnoredTypeError as exc:
        return f"ignored: {exc}"
    except RecordError as exc:
        return f"error: {exc}"
    return staged["event_type"]


def test_the_table_here_is_postmarks_whole_table() -> None:
    """Every published type is mapped, with its published code, and nothing else is."""
    assert {n: c for n, c, _ in POSTMARK_TABLE} == {
        n: c for n, (c, _) in postmark.BOUNCE_TYPES.items()
    }


@pytest.mark.parametrize(("name", "code", "expected"), POSTMARK_TABLE)
def test_each_postmark_bounce_type_maps_deliberately(name: str, code: int, expected: str) -> None:
    for body in (
        postmark_bounce(1, name, code),  # Type and TypeCode
        postmark_bounce(2, name, None),  # Type only
        postmark_bounce(3, None, code),  # TypeCode only
    ):
        got = _outcome(registry.by_format("postmark"), body)
        if expected == "ignored":
            assert got == f"ignored: ignored_type: postmark:Bounce/{name}"
        elif expected == "error":
            assert got.startswith("error: ") and repr(name) in got, got
        else:
            assert got == expected, body


def test_auto_responders_and_challenges_are_not_bounces_and_unknown_is_not_hard() -> None:
    """The three mistakes the issue names, said plainly."""
    adapter = registry.by_format("postmark")
    for name, code in (("AutoResponder", 64), ("ChallengeVerification", 16384)):
        assert "bounce" not in _outcome(adapter, postmark_bounce(1, name, code)).split(": ")[0]
    assert _outcome(adapter, postmark_bounce(1, "Unsubscribe", 16)) == "unsubscribe"
    assert _outcome(adapter, postmark_bounce(1, "Unknown", 2048)).startswith("error: ")


@pytest.mark.parametrize(
    ("type_", "code", "reason"),
    [
        ("Teleported", None, "unmapped postmark bounce type 'Teleported'"),
        ("Teleported", 77, "unmapped postmark bounce type 'Teleported'"),
        (None, 77, "unknown TypeCode 77"),
        ("HardBounce", 4096, "disagrees with its TypeCode 4096"),
    ],
)
def test_a_bounce_type_outside_postmarks_table_is_an_error_naming_it(
    type_: str | None, code: int | None, reason: str
) -> None:
    got = _outcome(registry.by_format("postmark"), postmark_bounce(1, type_, code))
    assert got.startswith("error: ") and reason in got, got


@pytest.mark.parametrize(
    ("suppress", "reason", "expected"),
    [
        (True, "ManualSuppression", "unsubscribe"),
        (True, "HardBounce", "ignored: ignored_type: postmark:SubscriptionChange/HardBounce"),
        (
            True,
            "SpamComplaint",
            "ignored: ignored_type: postmark:SubscriptionChange/SpamComplaint",
        ),
        (False, "ManualSuppression", "ignored: ignored_type: postmark:SubscriptionChange/"),
        (False, None, "ignored: ignored_type: postmark:SubscriptionChange/"),
        (True, "Teleported", "error: unmapped postmark SuppressionReason 'Teleported'"),
        (True, None, "error: unmapped postmark SuppressionReason None"),
    ],
)
def test_a_subscription_change_is_an_unsubscribe_only_when_manual(
    suppress: bool, reason: str | None, expected: str
) -> None:
    got = _outcome(registry.by_format("postmark"), subscription_change(1, suppress, reason))
    assert got.startswith(expected), got


def test_postmark_suppressions_are_not_counted_twice_and_inbound_is_ignored(
    tmp_path: Path,
) -> None:
    """A hard bounce and a spam complaint each arrive twice (their own webhook and the
    SubscriptionChange of the suppression Postmark makes): one event each, no unsubscribe."""
    bodies = [
        postmark_inbound(),  # first in the file: still detected as Postmark's
        postmark_bounce(1, "HardBounce", 1),
        subscription_change(1, True, "HardBounce"),
        {**postmark_bounce(2, "SpamComplaint", 100001), "RecordType": "SpamComplaint"},
        subscription_change(2, True, "SpamComplaint"),
        subscription_change(3, True, "ManualSuppression"),
        subscription_change(3, False, "ManualSuppression"),  # re-subscribed later
        postmark_bounce(4, "AutoResponder", 64),
        postmark_bounce(5, "Unknown", 2048),
    ]
    path = tmp_path / "postmark.ndjson"
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    summary = ingest(path, tmp_path / "out", key=KEY)
    assert [f.format for f in summary.files] == ["postmark"]
    assert summary.by_type == {"bounce_hard": 1, "complaint": 1, "unsubscribe": 1}
    assert summary.ignored_by_type == {
        "postmark:Bounce/AutoResponder": 1,
        "postmark:Inbound": 1,
        "postmark:SubscriptionChange/HardBounce": 1,
        "postmark:SubscriptionChange/SpamComplaint": 1,
        "postmark:SubscriptionChange/reactivation": 1,
    }
    assert summary.errors == 1  # the unclassified bounce, named
    (reason,) = (r for r in summary.quarantine_reasons if not r.startswith("ignored_type"))
    assert "'Unknown'" in reason
    events = pd.read_parquet(summary.events_path)
    assert set(events["bounce_class"].dropna()) == {"HardBounce", "SpamComplaint"}


def test_the_published_postmark_bounce_still_maps() -> None:
    """Postmark's blog example (legacy shape: no RecordType) is a hard bounce."""
    body = json.loads(
        (ESP / "postmark" / "blog_putting_webhooks_to_work_bounce_legacy.json").read_text()
    )
    assert _outcome(registry.by_format("postmark"), body) == "bounce_hard"


# --- SES over SNS -------------------------------------------------------------------------------


def _sample(name: str) -> dict:
    return json.loads((ESP / "ses" / name).read_text("utf-8"))


def envelope(record: dict | str, i: int, timestamp: str = "2017-08-09T23:59:59.000Z") -> dict:
    """An SES record in the SNS HTTP notification body AWS documents (``Message`` a string)."""
    body = _sample("sns_http_notification_envelope_example.json")
    body.pop("Subject")
    body["MessageId"] = f"22b80b92-fdea-4c2c-8f9d-bdfb0c7b{i:04d}"
    body["Message"] = record if isinstance(record, str) else json.dumps(record)
    body["Timestamp"] = timestamp
    return body


VALIDATION = "Successfully validated SNS topic for Amazon SES event publishing."
SUBSCRIBED = {
    "notificationType": "AmazonSnsSubscriptionSucceeded",
    "message": "You have successfully subscribed your Amazon SNS topic "
    "'arn:aws:sns:us-west-2:123456789012:MyTopic' to receive 'Bounce' notifications from "
    "Amazon SES for identity 'example.com'.",
}


def sns_capture(path: Path) -> Path:
    """What an SNS HTTP endpoint receives, in order: the subscription confirmation first, SES's
    validation notification, events, an inbound mail, and an unsubscribe confirmation last."""
    events = ["Send", "Delivery", "Open", "Click", "Bounce", "Complaint"]
    bodies = [
        _sample("sns_subscription_confirmation.json"),
        envelope(VALIDATION, 0),
        envelope(SUBSCRIBED, 1),
        *(envelope(_sample(f"event_record_{e}.json"), 10 + i) for i, e in enumerate(events)),
        envelope(_sample("receiving_notification_alert.json"), 20),
        _sample("sns_unsubscribe_confirmation.json"),
    ]
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    return path


SES_IGNORED = {
    "ses:AmazonSnsSubscriptionSucceeded": 1,
    "ses:Received": 1,
    "ses:SNS topic validation": 1,
    "ses:SubscriptionConfirmation": 1,
    "ses:UnsubscribeConfirmation": 1,
}
SES_EVENTS = {
    "bounce_hard": 1,
    "click": 1,
    "complaint": 1,
    "delivered": 1,
    "open": 1,
    "send": 1,
}


@pytest.mark.parametrize("fmt", ["auto", "ses"])
def test_ingest_strict_passes_on_an_sns_capture_that_begins_with_a_confirmation(
    tmp_path: Path, monkeypatch, fmt: str
) -> None:
    capture = sns_capture(tmp_path / "sns-capture.ndjson")
    monkeypatch.setenv("LOOPEXP_HASH_KEY", "a-test-secret")
    res = CliRunner().invoke(
        app,
        ["ingest", str(capture), "--out", str(tmp_path / "out"), "--strict", "--json",
         "--format", fmt],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [f["format"] for f in summary["files"]] == ["ses"]
    assert (summary["errors"], summary["ignored_by_type"]) == (0, SES_IGNORED)
    assert summary["by_type"] == SES_EVENTS
    assert summary["input_records"] == summary["events"] + summary["quarantined"]


def test_detection_skips_control_messages_even_beyond_the_files_head(
    tmp_path: Path, monkeypatch
) -> None:
    """The head holds only control messages: the file is read on until its first event."""
    from loopexp.events import staging

    capture = sns_capture(tmp_path / "sns.ndjson")
    lines = capture.read_bytes().split(b"\n")
    head = sum(len(line) + 1 for line in lines[:3]) + 100  # 3 control messages, a cut event
    assert head < capture.stat().st_size and b"Send" not in capture.read_bytes()[:head]
    monkeypatch.setattr(staging, "HEAD_BYTES", head)
    seen = []
    monkeypatch.setattr(staging, "_detect", _spy(staging._detect, seen))
    summary = ingest(capture, tmp_path / "out", key=KEY)
    assert [f.format for f in summary.files] == ["ses"]
    assert (summary.by_type, summary.ignored_by_type) == (SES_EVENTS, SES_IGNORED)
    assert seen == [False, True]  # the head told nothing; the whole file did


def _spy(detect, seen: list):
    def spy(path, text, *, final=True):
        seen.append(final)
        return detect(path, text, final=final)

    return spy


def test_a_capture_of_control_messages_only_is_sess_and_all_ignored(tmp_path: Path) -> None:
    path = tmp_path / "sns.ndjson"
    bodies = [_sample("sns_subscription_confirmation.json"), envelope(VALIDATION, 0)]
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    summary = ingest(path, tmp_path / "out", key=KEY)
    assert [f.format for f in summary.files] == ["ses"]
    assert (summary.events, summary.ignored, summary.errors) == (0, 2, 0)


def test_an_unknown_first_event_after_a_confirmation_is_still_refused(tmp_path: Path) -> None:
    from loopexp.events.reader import IngestError

    path = tmp_path / "x.ndjson"
    bodies = [_sample("sns_subscription_confirmation.json"), {"what": "not an event"}]
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    with pytest.raises(IngestError, match="not recognised"):
        ingest(path, tmp_path / "out", key=KEY)


def test_control_messages_are_recognised_and_ordinary_notifications_are_not() -> None:
    assert ses.control_kind(_sample("sns_subscription_confirmation.json")) == (
        "SubscriptionConfirmation"
    )
    assert ses.control_kind(_sample("sns_unsubscribe_confirmation.json")) == (
        "UnsubscribeConfirmation"
    )
    assert ses.control_kind(envelope(VALIDATION, 0)) == "SNS topic validation"
    assert ses.control_kind(SUBSCRIBED) == "AmazonSnsSubscriptionSucceeded"
    assert ses.control_kind(envelope(_sample("event_record_Open.json"), 1)) is None
    assert ses.control_kind(_sample("event_record_Open.json")) is None
    assert registry.control(postmark_bounce(1, "HardBounce", 1)) is None


def _ts(record: dict) -> pd.Timestamp:
    (staged,) = registry.by_format("ses").normalize(record, Context(), CONFIG)
    return pd.Timestamp(staged["ts"])


def test_an_ses_record_without_its_own_time_takes_the_sns_envelopes() -> None:
    opened = _sample("event_record_Open.json")
    assert _ts(envelope(opened, 1)) == pd.Timestamp(opened["open"]["timestamp"])
    del opened["open"]["timestamp"]
    published = "2017-08-09T22:00:20.001Z"
    assert _ts(envelope(opened, 1, published)) == pd.Timestamp(published)
    with pytest.raises(RecordError, match=r"without its own timestamp \(open.timestamp\)"):
        _ts(opened)  # no envelope: no time to give it (never the send time)
    sent = _sample("event_record_Send.json")  # a Send's own time is mail.timestamp
    assert _ts(envelope(sent, 2)) == pd.Timestamp(sent["mail"]["timestamp"])


def test_ses_inbound_mail_is_ignored_with_its_type(tmp_path: Path) -> None:
    received = _sample("receiving_notification_alert.json")
    assert _outcome(registry.by_format("ses"), received) == ("ignored: ignored_type: ses:Received")
    assert _outcome(registry.by_format("ses"), envelope(received, 3)) == (
        "ignored: ignored_type: ses:Received"
    )
