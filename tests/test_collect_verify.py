"""Each provider's webhook verification on vectors signed by keys made here (never a live ESP)."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error

import pytest

from loopexp.collect.replay import TokenCache
from loopexp.collect.settings import CollectSettings, build_verifiers
from loopexp.collect.sns import SnsVerifier, https_fetch, pinned, sns_host
from loopexp.collect.verify import (
    KlaviyoVerifier,
    MailgunVerifier,
    MandrillVerifier,
    PostmarkVerifier,
    RefusedError,
    SendGridVerifier,
)
from loopexp.core.errors import ConfigError
from tests import _collect_signing as sig

URL = "https://hooks.example.com/webhooks/mandrill"


def _lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def _refused(verify, headers, body, url="http://x/") -> RefusedError:
    with pytest.raises(RefusedError) as info:
        verify(_lower(headers), body, url)
    return info.value


# --- SendGrid -------------------------------------------------------------------------------------
def test_sendgrid_signed_batch_with_crlf_and_key_rotation():
    old, old_pub = sig.sendgrid_keys()
    new, new_pub = sig.sendgrid_keys()
    body = sig.sendgrid_body([sig.sendgrid_event(i) for i in range(3)])
    assert b"},\r\n{" in body and body.endswith(b"]\r\n")
    v = SendGridVerifier([old_pub, new_pub])
    assert v.verify(_lower(sig.sign_sendgrid(old, body)), body, "").headers
    v.verify(_lower(sig.sign_sendgrid(new, body)), body, "")
    # a proxy that dropped the final CRLF, or a body signed without it: the same batch
    v.verify(_lower(sig.sign_sendgrid(new, body)), body[:-2], "")
    v.verify(_lower(sig.sign_sendgrid(new, body[:-2])), body, "")


def test_sendgrid_refuses_forged_tampered_stale_and_unsigned():
    key, pub = sig.sendgrid_keys()
    other, _ = sig.sendgrid_keys()
    body = sig.sendgrid_body([sig.sendgrid_event(1)])
    v = SendGridVerifier([pub], tolerance=300)
    assert _refused(v.verify, sig.sign_sendgrid(other, body), body).reason == "bad_signature"
    tampered = body.replace(b"delivered", b"click")
    assert _refused(v.verify, sig.sign_sendgrid(key, body), tampered).reason == "bad_signature"
    stale = sig.sign_sendgrid(key, body, ts=int(time.time()) - 301)
    assert _refused(v.verify, stale, body).reason == "stale"
    future = sig.sign_sendgrid(key, body, ts=int(time.time()) + 400)
    assert _refused(v.verify, future, body).reason == "stale"
    # the timestamp is signed: moving it fresh breaks the signature
    moved = {**stale, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time()))}
    assert _refused(v.verify, moved, body).reason == "bad_signature"
    assert _refused(v.verify, {}, body).reason == "missing_signature"
    assert _refused(v.verify, {}, body).status == 401


def test_sendgrid_key_must_be_an_ec_public_key():
    with pytest.raises(ConfigError, match="base64 public key"):
        SendGridVerifier(["not a key"])


# --- Mailgun --------------------------------------------------------------------------------------
def test_mailgun_signature_tolerance_and_persisted_replay_cache(tmp_path):
    cache_file = tmp_path / "tokens.txt"
    v = MailgunVerifier(["old-key", "key-1"], TokenCache(cache_file, 700))
    body = sig.mailgun_body("key-1", sig.mailgun_event(1), token="tok-1")
    checked = v.verify({}, body, "")
    checked.after_store()  # the receiver records the token once the request is stored
    replay = _refused(v.verify, {}, body)
    assert (replay.reason, replay.status) == ("replayed", 406)
    # a restarted receiver still knows the token
    again = MailgunVerifier(["key-1"], TokenCache(cache_file, 700))
    assert _refused(again.verify, {}, body).reason == "replayed"
    # the body is not signed: a captured triple with another body is the same replay
    forged_body = json.loads(body)
    forged_body["event-data"]["recipient"] = "attacker@example.com"
    assert _refused(again.verify, {}, json.dumps(forged_body).encode()).reason == "replayed"
    forged = sig.mailgun_body("wrong-key", sig.mailgun_event(2))
    assert _refused(v.verify, {}, forged).status == 401
    stale = sig.mailgun_body("key-1", sig.mailgun_event(3), ts=int(time.time()) - 1000)
    assert _refused(v.verify, {}, stale).reason == "stale"
    assert _refused(v.verify, {}, b"{not json").status == 406


def test_mailgun_token_cache_forgets_outside_its_window(tmp_path):
    now = [1_000_000.0]
    cache = TokenCache(tmp_path / "t.txt", 600, clock=lambda: now[0])
    cache.add("a", now[0])
    assert cache.seen("a")
    now[0] += 601
    assert not cache.seen("a")
    assert not TokenCache(tmp_path / "t.txt", 600, clock=lambda: now[0]).seen("a")


# --- Mandrill -------------------------------------------------------------------------------------
def test_mandrill_signature_over_url_and_sorted_fields():
    body, headers = sig.mandrill_request("mk", URL, [sig.mandrill_event(1)])
    MandrillVerifier(["mk"]).verify(_lower(headers), body, URL)
    # behind a proxy the request URL differs: the configured public URL is what Mandrill signed
    MandrillVerifier(["mk"], public_url=URL).verify(_lower(headers), body, "http://127.0.0.1/x")
    assert _refused(MandrillVerifier(["mk"]).verify, headers, body, URL + "x").reason == (
        "bad_signature"
    )
    assert _refused(MandrillVerifier(["other"]).verify, headers, body, URL).status == 401
    tampered = body.replace(b"open", b"click")
    assert _refused(MandrillVerifier(["mk"]).verify, headers, tampered, URL)


# --- Klaviyo --------------------------------------------------------------------------------------
def test_klaviyo_signature_and_tolerance():
    body = sig.klaviyo_body(1)
    v = KlaviyoVerifier(["s" * 32], tolerance=300)
    kept = v.verify(_lower(sig.sign_klaviyo("s" * 32, body)), body, "").headers
    assert kept["klaviyo-webhook-id"] == "wh-1"
    assert _refused(v.verify, sig.sign_klaviyo("t" * 32, body), body).reason == "bad_signature"
    assert _refused(v.verify, sig.sign_klaviyo("s" * 32, body), body + b" ").reason == (
        "bad_signature"
    )
    stale = sig.sign_klaviyo("s" * 32, body, ts=int(time.time()) - 301)
    assert _refused(v.verify, stale, body).reason == "stale"
    # signed, but for another webhook than the header names (Klaviyo: do not process it)
    other = {**sig.sign_klaviyo("s" * 32, body), "Klaviyo-Webhook-Id": "wh-2"}
    assert _refused(v.verify, other, body).reason == "webhook_id_mismatch"


# --- Postmark -------------------------------------------------------------------------------------
def test_postmark_basic_auth_rotation_and_refusal():
    v = PostmarkVerifier(["hooks:old,pass", "hooks:new-pass"])
    assert v.verify(_lower(sig.basic_auth("hooks:new-pass")), b"{}", "").headers == {}
    v.verify(_lower(sig.basic_auth("hooks:old,pass")), b"{}", "")
    assert _refused(v.verify, sig.basic_auth("hooks:wrong"), b"{}").reason == "bad_signature"
    assert _refused(v.verify, {}, b"{}").reason == "missing_signature"
    with pytest.raises(ConfigError, match="user:password"):
        PostmarkVerifier(["no-colon"])


# --- SNS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signer() -> sig.SnsSigner:
    return sig.SnsSigner()


def _sns(signer, **kw) -> SnsVerifier:
    signer.fetched.clear()
    return SnsVerifier([sig.TOPIC], fetch=signer.fetch, issuers=[signer.ca], **kw)


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signature_versions_and_certificate_cache(signer, version):
    v = _sns(signer)
    for _ in range(3):
        msg = signer.message(version=version)
        checked = v.verify({}, json.dumps(msg).encode(), "")
        assert not checked.control
    assert signer.fetched == [sig.CERT_URL]  # fetched once, then cached


def test_sns_refuses_tampered_foreign_topic_and_bad_certificate_urls(signer):
    v = _sns(signer)
    msg = signer.message()
    tampered = {**msg, "Message": msg["Message"].replace("Delivery", "Bounce")}
    assert _refused(v.verify, {}, json.dumps(tampered).encode()).reason == "bad_signature"
    signer.fetched.clear()
    foreign = signer.message(TopicArn="arn:aws:sns:eu-west-1:999999999999:theirs")
    refused = _refused(v.verify, {}, json.dumps(foreign).encode())
    assert (refused.reason, refused.status) == ("topic_not_allowed", 403)
    for url in (
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.io/SimpleNotificationService-01.pem",
        "https://evil.io/sns.eu-west-1.amazonaws.com/SimpleNotificationService-01.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-01.pem",
        "https://x@sns.eu-west-1.amazonaws.com/SimpleNotificationService-01.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-01.pem?x=1",
    ):
        bad = signer.message(SigningCertURL=url)
        assert _refused(v.verify, {}, json.dumps(bad).encode()).reason == "bad_certificate_url"
    assert signer.fetched == []  # nothing fetched for a refused message
    stale = signer.message(Timestamp="2020-01-01T00:00:00.000Z")
    assert _refused(v.verify, {}, json.dumps(stale).encode()).reason == "stale"


def test_sns_certificate_of_another_ca_is_refused(signer):
    stranger = sig.SnsSigner()
    v = SnsVerifier([sig.TOPIC], fetch=stranger.fetch, issuers=[signer.ca])
    msg = stranger.message()
    assert _refused(v.verify, {}, json.dumps(msg).encode()).reason == "certificate_untrusted"


def test_sns_subscription_confirmed_only_for_allowed_topics(signer):
    v = _sns(signer)
    confirm = signer.message("SubscriptionConfirmation")
    assert v.verify({}, json.dumps(confirm).encode(), "").control
    assert signer.fetched[-1] == confirm["SubscribeURL"]
    signer.fetched.clear()
    theirs = signer.message(
        "SubscriptionConfirmation", TopicArn="arn:aws:sns:eu-west-1:999999999999:theirs"
    )
    assert _refused(v.verify, {}, json.dumps(theirs).encode()).status == 403
    assert signer.fetched == []  # never confirmed
    elsewhere = signer.message(
        "SubscriptionConfirmation", SubscribeURL="https://evil.io/?Action=ConfirmSubscription"
    )
    assert _refused(v.verify, {}, json.dumps(elsewhere).encode()).reason == "bad_subscribe_url"


def test_sns_host_and_pinning():
    assert sns_host("arn:aws:sns:us-east-2:1:t") == "sns.us-east-2.amazonaws.com"
    assert sns_host("arn:aws-cn:sns:cn-north-1:1:t") == "sns.cn-north-1.amazonaws.com.cn"
    with pytest.raises(RefusedError):
        sns_host("arn:aws:sns:evil.io/x:1:t")
    assert not pinned("https://sns.us-east-2.amazonaws.com#x", "sns.us-east-2.amazonaws.com")


def test_certificate_fetch_follows_no_redirect():
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/evil.pem")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            https_fetch(f"http://127.0.0.1:{server.server_port}/cert.pem")
        assert info.value.code == 302
    finally:
        server.shutdown()
        server.server_close()


# --- settings -------------------------------------------------------------------------------------
def test_no_secret_refuses_to_start_and_unsigned_is_loud(tmp_path, caplog):
    with pytest.raises(ConfigError, match="LOOPEXP_SENDGRID_VERIFICATION_KEY"):
        build_verifiers(CollectSettings(out=tmp_path))
    served = build_verifiers(CollectSettings(out=tmp_path, allow_unsigned=frozenset({"postmark"})))
    assert list(served) == ["postmark"]
    assert "UNSIGNED" in caplog.text
    with pytest.raises(ConfigError, match="unknown provider"):
        build_verifiers(CollectSettings(out=tmp_path, allow_unsigned=frozenset({"sendgird"})))


def test_secrets_from_environment_and_files(tmp_path, monkeypatch):
    _, pub = sig.sendgrid_keys()
    key_file = tmp_path / "mailgun.key"
    key_file.write_text("k1\nk2\n")
    monkeypatch.setenv("LOOPEXP_SENDGRID_VERIFICATION_KEY", pub)
    monkeypatch.setenv("LOOPEXP_MAILGUN_SIGNING_KEY_FILE", str(key_file))
    monkeypatch.setenv("LOOPEXP_POSTMARK_BASIC_AUTH", "u:p,with-comma")
    settings = CollectSettings.from_env(tmp_path)
    assert settings.secrets["mailgun"] == ["k1", "k2"]
    assert settings.secrets["postmark"] == ["u:p,with-comma"]
    assert set(build_verifiers(settings)) == {"sendgrid", "mailgun", "postmark"}
