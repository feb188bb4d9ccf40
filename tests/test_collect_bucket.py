"""Two stateless receivers shipping sealed segments to an S3-compatible bucket (moto's server
mode, a real HTTP server on 127.0.0.1), and ingest reading them all back from the bucket."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import boto3
import pytest

from loopexp.core.keys import HashKey
from loopexp.events.ingest import ingest
from tests import _collect_signing as sig
from tests._collect_servers import running

KEY = HashKey(b"test-secret-for-collect", "test")


@pytest.fixture
def s3(monkeypatch):
    with running({}, "--moto") as moto:
        for name, value in {
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3").create_bucket(Bucket="hooks")
        yield moto.url


def _post(url: str, body: bytes, headers: dict) -> int:
    host = urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    conn.request("POST", "/webhooks/sendgrid", body, headers)
    status = conn.getresponse().status
    conn.close()
    return status


def test_receivers_ship_segments_and_ingest_reads_the_bucket(s3, tmp_path):
    private, public = sig.sendgrid_keys()
    retried = sig.sendgrid_body([sig.sendgrid_event(i, sg_event_id=f"both-{i}") for i in range(3)])
    sent = 0
    for instance in ("host-a", "host-b"):
        env = {
            "LOOPEXP_COLLECT_OUT": str(tmp_path / instance),
            "LOOPEXP_SENDGRID_VERIFICATION_KEY": public,
            "LOOPEXP_COLLECT_INSTANCE": instance,
            "LOOPEXP_COLLECT_BUCKET": "s3://hooks/raw",
        }
        with running(env) as receiver:
            own = sig.sendgrid_body([sig.sendgrid_event(i) for i in range(4)])
            for body in (own, retried):  # the ESP retried one batch at the other instance
                assert _post(receiver.url, body, sig.sign_sendgrid(private, body)) == 200
                sent += 4 if body is own else 3
        # stopped: the open segment was sealed, shipped, and removed locally
        assert not list((tmp_path / instance).glob("*.wlog*")), instance
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="hooks")["Contents"]]
    assert len(keys) == 2 and all(k.startswith("raw/host-") for k in keys)
    summary = ingest("s3://hooks/raw", tmp_path / "out", key=KEY)
    assert (summary.input_records, summary.duplicates) == (sent, 3)
    assert summary.events == 4 + 4 + 3
    report = json.loads((tmp_path / "out" / "ingest_summary.json").read_text())
    assert report["input_records"] == summary.events + summary.duplicates + summary.quarantined
