"""Each provider's webhook signature scheme: a request is stored only once its verifier passes.

Verification sits here, in the receiver, not on the adapters' ``verify`` hook: it needs the
receiver's state (secrets that rotate, Mailgun's persisted token cache, SNS's certificate cache and
fetcher, the clock, the public URL behind a proxy), while the adapters map stored records to events
and stay free of network and crypto. Each verifier raises :class:`RefusedError` with the reason
(counted in ``/metrics``) and the status the provider acts on.

Schemes (sources in ``reference/webhooks.md``): SendGrid ECDSA P-256/SHA-256 over timestamp + raw
body; Mailgun HMAC-SHA256 of timestamp + token (the body is not signed, hence the token cache);
Mandrill base64 HMAC-SHA1 over the URL + sorted form fields; Klaviyo hex HMAC-SHA256 over the raw
body + timestamp; Postmark HTTP basic auth; SNS in :mod:`loopexp.collect.sns`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from loopexp.collect.replay import TokenCache
from loopexp.core.errors import ConfigError, InputError

#: Default timestamp tolerance (seconds either side of now), as Mailglass and Stripe use.
TOLERANCE_S = 300.0

SENDGRID_SIG = "x-twilio-email-event-webhook-signature"
SENDGRID_TS = "x-twilio-email-event-webhook-timestamp"
MANDRILL_SIG = "x-mandrill-signature"
KLAVIYO_SIG = "klaviyo-signature"
KLAVIYO_TS = "klaviyo-timestamp"
KLAVIYO_ID = "klaviyo-webhook-id"


class RefusedError(InputError):
    """A webhook request refused: the reason (a metric label) and the status to answer."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class Checked:
    """What a verifier learnt: headers to keep with the record, and what to do once stored."""

    headers: dict[str, str] = field(default_factory=dict)
    after_store: Callable[[], None] | None = None
    control: bool = False
    """A control message (an SNS subscription confirmation): answered, not stored."""


class Verifier:
    """A provider's verifier: ``verify`` raises :class:`RefusedError` or gives :class:`Checked`."""

    provider: str = ""

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """Check one request (headers lower-cased, raw body, the URL it was posted to)."""
        raise NotImplementedError


class Unsigned(Verifier):
    """Accepts every request: only when explicitly allowed (``LOOPEXP_COLLECT_ALLOW_UNSIGNED``)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """Nothing to check."""
        return Checked()


def _fresh(stamp: str | None, tolerance: float, now: float, status: int = 401) -> None:
    if not stamp:
        raise RefusedError("missing_timestamp", status)
    try:
        ts = float(stamp)
    except ValueError:
        raise RefusedError("bad_timestamp", status) from None
    if abs(now - ts) > tolerance:
        raise RefusedError("stale", status)


class SendGridVerifier(Verifier):
    """SendGrid Signed Event Webhook: ECDSA P-256 / SHA-256 over ``timestamp + raw body``."""

    provider = "sendgrid"

    def __init__(self, keys: list[str], tolerance: float = TOLERANCE_S, clock=time.time) -> None:
        self.keys = [_ec_key(k) for k in keys]
        self.tolerance = tolerance
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """Signature and timestamp; the body as received (never re-serialised)."""
        sig, stamp = headers.get(SENDGRID_SIG), headers.get(SENDGRID_TS)
        if not sig:
            raise RefusedError("missing_signature")
        _fresh(stamp, self.tolerance, self.clock())
        try:
            der = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            raise RefusedError("bad_signature") from None
        prefix = (stamp or "").encode()
        # SendGrid's multi-event bodies end each event with CRLF and the body with one; a proxy
        # that strips (or a client that adds) the final CRLF must not turn a real batch away.
        candidates = [body]
        candidates.append(body[:-2] if body.endswith(b"\r\n") else body + b"\r\n")
        for key in self.keys:
            for candidate in candidates:
                try:
                    key.verify(der, prefix + candidate, ec.ECDSA(hashes.SHA256()))
                except InvalidSignature:
                    continue
                return Checked({SENDGRID_SIG: sig, SENDGRID_TS: stamp or ""})
        raise RefusedError("bad_signature")


def _ec_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's key as its settings show it (base64 DER, no PEM framing) or as PEM."""
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split())))
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(
            f"SendGrid verification key is not a base64 public key ({exc}); copy it from "
            "Settings → Mail Settings → Event Webhook → Signature Verification"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("SendGrid verification key is not an ECDSA (P-256) public key")
    return key


class MailgunVerifier(Verifier):
    """Mailgun: HMAC-SHA256(signing key, timestamp + token), fresh, token never seen before.

    Mailgun signs only the timestamp and token, not the body: a captured triple would
    authenticate any body, so tokens are remembered (persisted, for the tolerance window) and a
    second use is refused. Refusals of a stale or replayed request answer 406, Mailgun's "do not
    retry"; a bad signature 401.
    """

    provider = "mailgun"

    def __init__(
        self,
        keys: list[str],
        tokens: TokenCache,
        tolerance: float = TOLERANCE_S,
        clock=time.time,
    ) -> None:
        self.keys = [k.encode() for k in keys]
        self.tokens = tokens
        self.tolerance = tolerance
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """Signature, freshness and the token cache."""
        try:
            sig = json.loads(body)["signature"]
            stamp, token, signature = (str(sig[k]) for k in ("timestamp", "token", "signature"))
        except (ValueError, KeyError, TypeError):
            raise RefusedError("missing_signature", 406) from None
        message = (stamp + token).encode()
        if not any(
            hmac.compare_digest(hmac.new(k, message, hashlib.sha256).hexdigest(), signature)
            for k in self.keys
        ):
            raise RefusedError("bad_signature")
        _fresh(stamp, self.tolerance, self.clock(), status=406)
        if self.tokens.seen(token):
            raise RefusedError("replayed", 406)
        return Checked(after_store=lambda: self.tokens.add(token, float(stamp)))


class MandrillVerifier(Verifier):
    """Mandrill: base64 HMAC-SHA1(webhook key, URL + each sorted form key + value)."""

    provider = "mandrill"

    def __init__(self, keys: list[str], public_url: str = "") -> None:
        self.keys = [k.encode() for k in keys]
        self.public_url = public_url

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """Signature over the URL Mandrill posts to (the public one behind a proxy)."""
        sig = headers.get(MANDRILL_SIG)
        if not sig:
            raise RefusedError("missing_signature")
        try:
            fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise RefusedError("bad_signature") from None
        target = self.public_url or url
        message = (target + "".join(k + v for k, v in sorted(fields))).encode()
        for key in self.keys:
            expected = base64.b64encode(hmac.new(key, message, hashlib.sha1).digest()).decode()
            if hmac.compare_digest(expected, sig):
                return Checked({MANDRILL_SIG: sig, "x-loopexp-signed-url": target})
        raise RefusedError("bad_signature")


class KlaviyoVerifier(Verifier):
    """Klaviyo system webhooks: hex HMAC-SHA256(secret, raw body + timestamp), fresh.

    The body + timestamp order is from a secondary source (webhooks.md [23]); Klaviyo's own page
    says the body's ``meta.klaviyo_webhook_id`` must match the ``Klaviyo-Webhook-Id`` header.
    """

    provider = "klaviyo"

    def __init__(self, keys: list[str], tolerance: float = TOLERANCE_S, clock=time.time) -> None:
        self.keys = [k.encode() for k in keys]
        self.tolerance = tolerance
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """Signature and timestamp."""
        sig, stamp = headers.get(KLAVIYO_SIG), headers.get(KLAVIYO_TS)
        if not sig:
            raise RefusedError("missing_signature")
        _fresh(stamp, self.tolerance, self.clock())
        message = body + (stamp or "").encode()
        if not any(
            hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest(), sig)
            for key in self.keys
        ):
            raise RefusedError("bad_signature")
        kept = {KLAVIYO_SIG: sig, KLAVIYO_TS: stamp or ""}
        if KLAVIYO_ID in headers:
            kept[KLAVIYO_ID] = headers[KLAVIYO_ID]
            # Klaviyo: meta.klaviyo_webhook_id must match the header, else do not process it
            if _klaviyo_meta_id(body) not in (None, headers[KLAVIYO_ID]):
                raise RefusedError("webhook_id_mismatch")
        return Checked(kept)


def _klaviyo_meta_id(body: bytes) -> str | None:
    """``meta.klaviyo_webhook_id`` of a body (None when absent or the body is not JSON)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None  # a malformed body with a valid signature is stored, then quarantined
    meta = value.get("meta") if isinstance(value, dict) else None
    found = meta.get("klaviyo_webhook_id") if isinstance(meta, dict) else None
    return None if found is None else str(found)


class PostmarkVerifier(Verifier):
    """Postmark has no signature: HTTP basic auth (``user:password`` in the webhook URL)."""

    provider = "postmark"

    def __init__(self, credentials: list[str]) -> None:
        for c in credentials:
            if ":" not in c:
                raise ConfigError(
                    "LOOPEXP_POSTMARK_BASIC_AUTH must be user:password (one per line to rotate)"
                )
        self.expected = [
            ("Basic " + base64.b64encode(c.encode()).decode()).encode() for c in credentials
        ]

    def verify(self, headers: Mapping[str, str], body: bytes, url: str) -> Checked:
        """The Authorization header against every configured credential, in constant time."""
        given = headers.get("authorization", "").encode()
        if not given:
            raise RefusedError("missing_signature")
        # compare with every credential (no early exit), so timing tells nothing
        matches = [hmac.compare_digest(given, e) for e in self.expected]
        if not any(matches):
            raise RefusedError("bad_signature")
        return Checked()  # the credential itself is never stored
