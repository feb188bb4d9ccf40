"""The receiver in process (Starlette's TestClient): every endpoint, status codes, metrics, and the
raw log read back by ``ingest`` through the adapters (dedupe, quarantine, the invariant)."""

from __future__ import annotations

import errno
import json
import warnings

import pyarrow.parquet as pq
import pytest

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from loopexp.collect.app import create_app
from loopexp.collect.settings import CollectSettings
from loopexp.core.keys import HashKey
from loopexp.events.ingest import ingest
from tests import _collect_signing as sig

KEY = HashKey(b"test-secret-for-collect", "test")
MANDRILL_URL = "https://hooks.example.com/webhooks/mandrill"


@pytest.fixture
def keys():
    private, public = sig.sendgrid_keys()
    return {"sendgrid": private, "sendgrid_pub": public, "sns": sig.SnsSigner()}


def _settings(tmp_path, keys, **kw) -> CollectSettings:
    secrets = {
        "sendgrid": [keys["sendgrid_pub"]],
        "mailgun": ["mg-key"],
        "ses": [sig.TOPIC],
        "postmark": ["hooks:pw"],
        "mandrill": ["md-key"],
        "klaviyo": ["k" * 32],
    }
    return CollectSettings(
        out=tmp_path / "raw", instance="test", secrets=secrets, mandrill_url=MANDRILL_URL, **kw
    )


def _client(tmp_path, keys, **kw) -> TestClient:
    app = create_app(_settings(tmp_path, keys, **kw), fetch=keys["sns"].fetch)
    return TestClient(app)


def _metric(client: TestClient, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _post_all(client: TestClient, keys) -> int:
    """One signed request to each endpoint; the number of events sent."""
    events = [sig.sendgrid_event(i) for i in range(5)]
    body = sig.sendgrid_body(events)
    posts = [("sendgrid", body, sig.sign_sendgrid(keys["sendgrid"], body))]
    posts.append(("mailgun", sig.mailgun_body("mg-key", sig.mailgun_event(1)), {}))
    posts.append(("ses", json.dumps(keys["sns"].message()).encode(), {}))
    posts.append(("postmark", sig.postmark_body(1), sig.basic_auth("hooks:pw")))
    md_body, md_headers = sig.mandrill_request(
        "md-key", MANDRILL_URL, [sig.mandrill_event(1), sig.mandrill_event(2)]
    )
    posts.append(("mandrill", md_body, md_headers))
    kl_body = sig.klaviyo_body(1)
    posts.append(("klaviyo", kl_body, sig.sign_klaviyo("k" * 32, kl_body)))
    for provider, data, headers in posts:
        response = client.post(f"/webhooks/{provider}", content=data, headers=headers)
        assert response.status_code == 200, (provider, response.text)
    return 5 + 1 + 1 + 1 + 2 + 1


def test_every_endpoint_stores_and_ingest_reads_the_raw_log(tmp_path, keys):
    with _client(tmp_path, keys) as client:
        sent = _post_all(client, keys)
        # a retried SendGrid batch: the same events again, removed at ingest on sg_event_id
        events = [sig.sendgrid_event(i, sg_event_id=f"retry-{i}") for i in range(3)]
        body = sig.sendgrid_body(events)
        for _ in range(2):
            headers = sig.sign_sendgrid(keys["sendgrid"], body)
            assert client.post("/webhooks/sendgrid", content=body, headers=headers).is_success
        assert _metric(client, "loopexp_webhook_accepted_total", provider="sendgrid") == 3
        assert _metric(client, "loopexp_webhook_fsync_seconds_count") >= 1
        assert client.get("/healthz").text.startswith("ok")
        assert not list((tmp_path / "raw").glob("*.wlog"))  # still open: not read downstream
    segments = list((tmp_path / "raw").glob("*.wlog"))
    assert len(segments) == 1 and segments[0].name.startswith("test-p")
    assert not list((tmp_path / "raw").glob("*.open"))
    summary = ingest(tmp_path / "raw", tmp_path / "out", key=KEY)
    assert summary.input_records == sent + 6
    assert summary.duplicates == 3
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined
    by_provider = pq.read_table(summary.events_path).column("provider").to_pylist()
    assert sorted(set(by_provider)) == sorted(
        {"sendgrid", "mailgun", "ses", "postmark", "mandrill", "klaviyo"}
    ), summary.quarantine_reasons
    assert summary.quarantined == 0, summary.quarantine_reasons
    assert b"user1@example.com" not in (tmp_path / "out" / "events.parquet").read_bytes()


def test_refusals_are_counted_and_nothing_is_stored(tmp_path, keys):
    body = sig.sendgrid_body([sig.sendgrid_event(1)])
    good = sig.sign_sendgrid(keys["sendgrid"], body)
    other, _ = sig.sendgrid_keys()
    with _client(tmp_path, keys, max_body_bytes=4096) as client:
        cases = [
            ("sendgrid", body, sig.sign_sendgrid(other, body), 401),  # forged
            ("sendgrid", body.replace(b"delivered", b"open"), good, 401),  # tampered
            ("sendgrid", body, sig.sign_sendgrid(keys["sendgrid"], body, ts=1), 401),  # stale
            ("sendgrid", b"[" + b" " * 5000 + b"]", good, 413),  # over the body limit
            ("postmark", sig.postmark_body(1), sig.basic_auth("hooks:nope"), 401),
            ("braze", b"{}", {}, 404),
        ]
        for provider, data, headers, status in cases:
            response = client.post(f"/webhooks/{provider}", content=data, headers=headers)
            assert response.status_code == status, (provider, response.text)
        confirm = json.dumps(keys["sns"].message("SubscriptionConfirmation")).encode()
        assert client.post("/webhooks/ses", content=confirm).status_code == 200  # confirmed
        assert keys["sns"].fetched[-1].startswith("https://sns.eu-west-1.amazonaws.com/?Action=")
        theirs = keys["sns"].message(TopicArn="arn:aws:sns:eu-west-1:999999999999:x")
        assert client.post("/webhooks/ses", content=json.dumps(theirs)).status_code == 403
        mg = sig.mailgun_body("mg-key", sig.mailgun_event(1))
        assert client.post("/webhooks/mailgun", content=mg).status_code == 200
        assert client.post("/webhooks/mailgun", content=mg).status_code == 406  # replayed
        metric = "loopexp_webhook_rejected_total"
        assert _metric(client, metric, provider="sendgrid", reason="bad_signature") == 2
        assert _metric(client, metric, provider="sendgrid", reason="stale") == 1
        assert _metric(client, metric, provider="sendgrid", reason="too_large") == 1
        assert _metric(client, metric, provider="mailgun", reason="replayed") == 1
        assert _metric(client, "loopexp_webhook_accepted_total", provider="sendgrid") == 0
    summary = ingest(tmp_path / "raw", tmp_path / "out", key=KEY)
    # only the one Mailgun event: no refused request and no SNS control message was stored
    assert (summary.input_records, summary.events) == (1, 1)


def test_malformed_json_with_a_valid_signature_is_stored_then_quarantined(tmp_path, keys):
    broken = b'[{"event": "delivered", "sg_event_id": "x1", "email": "a@example.com"'
    with _client(tmp_path, keys) as client:
        headers = sig.sign_sendgrid(keys["sendgrid"], broken)
        assert client.post("/webhooks/sendgrid", content=broken, headers=headers).is_success
        kl = b'{"data": [ not json'
        headers = sig.sign_klaviyo("k" * 32, kl)
        assert client.post("/webhooks/klaviyo", content=kl, headers=headers).is_success
    summary = ingest(tmp_path / "raw", tmp_path / "out", key=KEY)
    assert (summary.input_records, summary.events, summary.quarantined) == (2, 0, 2)
    quarantine = pq.read_table(summary.quarantine_path).to_pylist()
    assert {q["provider"] for q in quarantine} == {"sendgrid", "klaviyo"}
    assert all("JSON" in q["reason"] for q in quarantine), quarantine


def test_storage_failure_answers_503_and_acknowledges_nothing_lost(tmp_path, keys):
    app = create_app(_settings(tmp_path, keys), fetch=keys["sns"].fetch)
    writer = app.state.writer
    real_write = writer._write
    full = [False]

    def write(fd, data):  # the writer's I/O boundary: the disk fills up
        if full[0]:
            real_write(fd, data[: len(data) // 2])  # a partial write, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    writer._write = write
    acked, refused = [], []
    with TestClient(app) as client:
        for i in range(6):
            full[0] = i in (2, 3)
            event = sig.sendgrid_event(i)
            body = sig.sendgrid_body([event])
            response = client.post(
                "/webhooks/sendgrid",
                content=body,
                headers=sig.sign_sendgrid(keys["sendgrid"], body),
            )
            (acked if response.status_code == 200 else refused).append(event["sg_event_id"])
            assert response.status_code in (200, 503)
        assert (
            _metric(client, "loopexp_webhook_rejected_total", provider="sendgrid", reason="storage")
            == 2
        )
    assert len(acked) == 4 and len(refused) == 2
    summary = ingest(tmp_path / "raw", tmp_path / "out", key=KEY)
    ids = pq.read_table(summary.events_path).column("event_id").to_pylist()
    assert sorted(ids) == sorted(acked)  # the partial writes were cut back, not read as events
    assert summary.quarantined == 0


def test_a_body_slower_than_the_read_timeout_gets_408(tmp_path, keys):
    import asyncio
    import socket
    import threading
    import time

    import uvicorn

    app = create_app(_settings(tmp_path, keys, read_timeout_s=0.5), fetch=keys["sns"].fetch)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[{"
            )
            started = time.perf_counter()
            answer = client.recv(200)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.perf_counter() - started < 5
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
