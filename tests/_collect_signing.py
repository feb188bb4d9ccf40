"""Test keys and signers for the webhook receiver's tests: vectors made here, never a live ESP.

Each signer follows the provider's published scheme independently of ``loopexp.collect`` (which
must then accept it): SendGrid ECDSA P-256, Mailgun / Klaviyo HMAC-SHA256, Mandrill HMAC-SHA1,
Postmark basic auth, and SNS messages signed by a leaf certificate of a self-made CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

REGION = "eu-west-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:ses-events"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"


def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair; the public key as SendGrid shows it (base64 DER, no PEM framing)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def sendgrid_body(events: list[dict]) -> bytes:
    """A batch as SendGrid sends it: events separated by ``,\\r\\n``, a final CRLF."""
    return ("[" + ",\r\n".join(json.dumps(e) for e in events) + "]\r\n").encode()


def sendgrid_event(i: int, **extra: object) -> dict:
    """One SendGrid delivered event with a unique ``sg_event_id``."""
    return {
        "email": f"user{i}@example.com",
        "timestamp": int(time.time()),
        "event": "delivered",
        "sg_event_id": extra.pop("sg_event_id", f"ev-{uuid.uuid4().hex}"),
        "sg_message_id": f"msg{i}",
        "variant": "A" if i % 2 else "B",
        **extra,
    }


def sign_sendgrid(private: ec.EllipticCurvePrivateKey, body: bytes, ts: int | None = None) -> dict:
    """The two SendGrid headers for ``body``."""
    stamp = str(int(time.time()) if ts is None else ts)
    sig = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def mailgun_body(key: str, event: dict, ts: int | None = None, token: str | None = None) -> bytes:
    """A Mailgun webhook body: the signature block and the event data."""
    stamp = str(int(time.time()) if ts is None else ts)
    token = token or uuid.uuid4().hex
    sig = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    body = {
        "signature": {"timestamp": stamp, "token": token, "signature": sig},
        "event-data": event,
    }
    return json.dumps(body).encode()


def mailgun_event(i: int) -> dict:
    """A Mailgun delivered event."""
    return {
        "event": "delivered",
        "id": f"mg-{i}-{uuid.uuid4().hex[:8]}",
        "timestamp": time.time(),
        "recipient": f"user{i}@example.com",
        "user-variables": {"variant": "A"},
        "message": {"headers": {"message-id": f"m{i}@example.com"}},
    }


def mandrill_request(key: str, url: str, events: list[dict]) -> tuple[bytes, dict]:
    """A Mandrill form body and its ``X-Mandrill-Signature`` header."""
    fields = {"mandrill_events": json.dumps(events)}
    signed = url + "".join(k + fields[k] for k in sorted(fields))
    sig = base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()
    headers = {"X-Mandrill-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}
    return urlencode(fields).encode(), headers


def mandrill_event(i: int) -> dict:
    """A Mandrill open event."""
    return {
        "event": "open",
        "_id": f"md-{i}-{uuid.uuid4().hex[:8]}",
        "ts": int(time.time()),
        "msg": {"email": f"user{i}@example.com", "_id": f"mdm{i}", "metadata": {"variant": "B"}},
        "user_agent": "Mozilla/5.0",
        "ip": "192.0.2.1",
    }


def sign_klaviyo(secret: str, body: bytes, ts: int | None = None) -> dict:
    """Klaviyo's headers: hex HMAC-SHA256 over the raw body + timestamp."""
    stamp = str(int(time.time()) if ts is None else ts)
    sig = hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    return {
        "Klaviyo-Signature": sig,
        "Klaviyo-Timestamp": stamp,
        "Klaviyo-Webhook-Id": "wh-1",
        "Content-Type": "application/json",
    }


def klaviyo_body(i: int) -> bytes:
    """A Klaviyo system webhook with one event (a Get Event resource in ``payload``)."""
    payload = {
        "type": "event",
        "id": f"kl-{i}-{uuid.uuid4().hex[:8]}",
        "attributes": {
            "datetime": dt.datetime.now(dt.UTC).isoformat(),
            "event_properties": {"variant": "A", "$email": f"user{i}@example.com"},
            "metric": "Received Email",
        },
    }
    item = {"external_id": payload["id"], "topic": "event:klaviyo.email_delivered"}
    meta = {"klaviyo_account_id": "AbC123", "klaviyo_webhook_id": "wh-1"}
    return json.dumps({"data": [{**item, "payload": payload}], "meta": meta}).encode()


def postmark_body(i: int) -> bytes:
    """A Postmark delivery webhook."""
    return json.dumps(
        {
            "RecordType": "Delivery",
            "MessageID": f"pm-{i}-{uuid.uuid4().hex[:8]}",
            "Recipient": f"user{i}@example.com",
            "DeliveredAt": dt.datetime.now(dt.UTC).isoformat(),
            "Metadata": {"variant": "A"},
        }
    ).encode()


def basic_auth(credential: str) -> dict:
    """An Authorization header for ``user:password``."""
    return {"Authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


class SnsSigner:
    """A self-made CA and SNS signing certificate; signs SNS envelopes like SNS does."""

    def __init__(self, common_name: str = "sns.amazonaws.com") -> None:
        now = dt.datetime.now(dt.UTC)
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopexp test CA")])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(leaf)
            .issuer_name(ca_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.ca_key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        """The injectable fetcher: the certificate at :data:`CERT_URL`, a SubscribeURL's answer."""
        self.fetched.append(url)
        if url == CERT_URL:
            return self.pem
        if "Action=ConfirmSubscription" in url:
            return b"<ConfirmSubscriptionResponse/>"
        raise OSError(f"404 {url}")

    def message(self, kind: str = "Notification", version: str = "1", **over: object) -> dict:
        """A signed SNS envelope (an SES delivery event inside for a Notification)."""
        msg = {
            "Type": kind,
            "MessageId": str(uuid.uuid4()),
            "TopicArn": TOPIC,
            "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "SignatureVersion": version,
            "SigningCertURL": CERT_URL,
        }
        if kind == "Notification":
            ses = {
                "eventType": "Delivery",
                "mail": {
                    "messageId": uuid.uuid4().hex,
                    "timestamp": msg["Timestamp"],
                    "destination": ["user1@example.com"],
                    "tags": {"variant": ["A"]},
                },
                "delivery": {"timestamp": msg["Timestamp"], "recipients": ["user1@example.com"]},
            }
            msg["Message"] = json.dumps(ses)
            msg["Subject"] = None
        else:
            msg["Message"] = "You have chosen to subscribe to the topic."
            msg["Token"] = "tok" + uuid.uuid4().hex
            msg["SubscribeURL"] = (
                f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription"
                f"&TopicArn={TOPIC}&Token={msg['Token']}"
            )
        msg.update(over)
        msg = {k: v for k, v in msg.items() if v is not None}
        msg["Signature"] = self.sign(msg, version)
        return msg

    def sign(self, msg: dict, version: str) -> str:
        """SNS's signature over the canonical ``Key\\nValue\\n`` string."""
        if msg["Type"] == "Notification":
            keys = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
        else:
            keys = (
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            )
        text = "".join(f"{k}\n{msg[k]}\n" for k in keys if k in msg)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        return base64.b64encode(
            self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        ).decode()
