r"""Amazon SES events through SNS: the message signature, the certificate, the topic allow-list.

boto3 has no verifier (boto/boto3#2508), so this follows AWS's "Verifying the signatures of
Amazon SNS messages": the canonical string (``Key\nValue\n`` of the fields of the message type,
in order), RSA PKCS#1 v1.5 with SHA-1 (``SignatureVersion`` 1) or SHA-256 (2), the certificate
fetched over HTTPS from ``SigningCertURL``. The pitfalls others shipped are closed here: the
certificate URL must be exactly ``https://sns.<region>.amazonaws.com/SimpleNotificationService-
….pem`` for the TopicArn's own region (django-ses#284, useSend#444), fetched without redirects and
with a timeout, cached; the TopicArn must be on the allow-list before anything else, since a valid
signature only proves that *some* topic signed (PostHog#61644); a SubscriptionConfirmation is
confirmed (GET of its SubscribeURL, pinned to the same host) only for an allowed topic.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from loopexp.collect.verify import Checked, RefusedError, Verifier

log = logging.getLogger(__name__)

#: SNS retries a delivery for at most an hour with the same Timestamp: older messages are stale.
MAX_AGE_S = 3600.0 + 300.0
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_FIELDS["UnsubscribeConfirmation"] = _FIELDS["SubscriptionConfirmation"]
_CERT_PATH = re.compile(r"^/SimpleNotificationService-[A-Za-z0-9]+\.pem$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")

#: ``fetch(url) -> bytes``: GET over HTTPS, no redirects, a timeout (injectable for tests).
Fetcher = Callable[[str], bytes]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an error (HTTPError 3xx), never followed


def https_fetch(url: str, timeout: float = 5.0) -> bytes:
    """GET ``url`` over HTTPS with the system's trust store, no redirects, a 5 s timeout."""
    opener = urllib.request.build_opener(_NoRedirect())
    with opener.open(url, timeout=timeout) as resp:
        return resp.read(1 << 20)


def sns_host(topic_arn: str) -> str:
    """``sns.<region>.amazonaws.com`` (``.com.cn`` in China) of a TopicArn (else refused)."""
    parts = topic_arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sns" or not _REGION.match(parts[3]):
        raise RefusedError("bad_topic_arn", 403)
    suffix = ".amazonaws.com.cn" if parts[1] == "aws-cn" else ".amazonaws.com"
    return f"sns.{parts[3]}{suffix}"


def pinned(url: str, host: str, path: re.Pattern | None = None) -> bool:
    """``url`` is https on exactly ``host`` (no port, user or fragment), path matching ``path``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.hostname == host
        and parts.netloc == host
        and not parts.fragment
        and (path is None or (bool(path.match(parts.path)) and not parts.query))
    )


def canonical(message: Mapping[str, object]) -> bytes:
    r"""The string SNS signs: ``Key\nValue\n`` of the message type's fields present, in order."""
    fields = _FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise RefusedError("bad_message_type", 400)
    return "".join(f"{k}\n{message[k]}\n" for k in fields if message.get(k) is not None).encode()


def _issued(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class SnsVerifier(Verifier):
    """SNS envelopes of allowed topics, signed by SNS; confirms subscriptions of those topics.

    The certificate is trusted because it came over HTTPS (the system's trust store) from the
    pinned SNS host; ``issuers``, when given, must also have issued it directly (a second check,
    and how the tests prove a certificate of another CA is refused).
    """

    provider = "ses"

    def __init__(
        self,
        topics: list[str],
        fetch: Fetcher = https_fetch,
        clock=time.time,
        max_age_s: float = MAX_AGE_S,
        issuers: list[x509.Certificate] | None = None,
    ) -> None:
        self.topics = frozenset(topics)
        self.issuers = issuers
        self.fetch = fetch
        self.clock = clock
        self.max_age_s = max_age_s
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def certificate(self, url: str) -> x509.Certificate:
        """The signing certificate at a pinned URL (fetched once, then cached while valid)."""
        with self._lock:
            cert = self._certs.get(url)
        if cert is None:
            try:
                cert = x509.load_pem_x509_certificate(self.fetch(url))
            except (OSError, ValueError) as exc:
                log.warning("SNS signing certificate %s not fetched: %s", url, exc)
                raise RefusedError("certificate_unavailable", 503) from None
            if self.issuers is not None and not any(_issued(cert, ca) for ca in self.issuers):
                raise RefusedError("certificate_untrusted")
            with self._lock:
                self._certs[url] = cert
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            with self._lock:
                self._certs.pop(url, None)
            raise RefusedError("certificate_expired")
        return cert

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """Topic, certificate URL, signature and age; confirms an allowed topic's subscription."""
        try:
            msg = json.loads(body)
            topic = str(msg["TopicArn"])
        except (ValueError, KeyError, TypeError):
            raise RefusedError("not_an_sns_message", 400) from None
        if not isinstance(msg, dict) or topic not in self.topics:
            raise RefusedError("topic_not_allowed", 403)
        host = sns_host(topic)
        cert_url = str(msg.get("SigningCertURL", ""))
        if not pinned(cert_url, host, _CERT_PATH):
            raise RefusedError("bad_certificate_url", 403)
        self._check_signature(msg, cert_url)
        self._check_age(msg)
        kept = {"x-amz-sns-message-type": str(msg.get("Type")), "x-amz-sns-topic-arn": topic}
        if msg.get("Type") == "SubscriptionConfirmation":
            self._confirm(msg, host)
            return Checked(kept, control=True)
        if msg.get("Type") == "UnsubscribeConfirmation":
            return Checked(kept, control=True)
        return Checked(kept)

    def _check_signature(self, msg: dict, cert_url: str) -> None:
        version = str(msg.get("SignatureVersion", ""))
        if version not in ("1", "2"):
            raise RefusedError("bad_signature_version")
        try:
            signature = base64.b64decode(str(msg.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise RefusedError("bad_signature") from None
        key = self.certificate(cert_url).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise RefusedError("bad_certificate")
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        try:
            key.verify(signature, canonical(msg), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise RefusedError("bad_signature") from None

    def _check_age(self, msg: dict) -> None:
        try:
            sent = datetime.fromisoformat(str(msg.get("Timestamp")).replace("Z", "+00:00"))
        except ValueError:
            raise RefusedError("bad_timestamp") from None
        if abs(self.clock() - sent.timestamp()) > self.max_age_s:
            raise RefusedError("stale")

    def _confirm(self, msg: dict, host: str) -> None:
        url = str(msg.get("SubscribeURL", ""))
        if not pinned(url, host):
            raise RefusedError("bad_subscribe_url", 403)
        try:
            self.fetch(url)
        except OSError as exc:
            log.warning("SNS subscription to %s not confirmed: %s", msg.get("TopicArn"), exc)
            raise RefusedError("confirmation_failed", 503) from None
        log.info("SNS subscription to %s confirmed", msg.get("TopicArn"))
