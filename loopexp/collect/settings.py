"""The receiver's settings: secrets from the environment (``loopexp.core.config``), limits, paths.

A provider is served only with its secret, or when explicitly allowed unsigned
(``LOOPEXP_COLLECT_ALLOW_UNSIGNED``), which logs a loud warning at start. A receiver with no
provider at all refuses to start, naming the variables to set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from loopexp.collect.replay import TokenCache
from loopexp.collect.sns import Fetcher, SnsVerifier, https_fetch
from loopexp.collect.verify import (
    TOLERANCE_S,
    KlaviyoVerifier,
    MailgunVerifier,
    MandrillVerifier,
    PostmarkVerifier,
    SendGridVerifier,
    Unsigned,
    Verifier,
)
from loopexp.core import config
from loopexp.core.errors import ConfigError
from loopexp.events.adapters.webhooks import PROVIDERS

log = logging.getLogger(__name__)

#: Folder (inside the output folder) of the receiver's own state: Mailgun's token cache.
STATE_DIR = ".state"


@dataclass
class CollectSettings:
    """Everything the app needs; :meth:`from_env` reads the secrets."""

    out: Path
    instance: str = "receiver"
    secrets: dict[str, list[str]] = field(default_factory=dict)
    allow_unsigned: frozenset[str] = frozenset()
    mandrill_url: str = ""
    tolerance_s: float = TOLERANCE_S
    max_body_bytes: int = 16 << 20
    read_timeout_s: float = 30.0
    segment_bytes: int = 64 << 20
    segment_seconds: float = 300.0
    fsync: bool = True
    bucket: str = ""
    """``s3://bucket/prefix`` to ship sealed segments to (empty: they stay in ``out``)."""

    @classmethod
    def from_env(cls, out: str | Path, **overrides: object) -> CollectSettings:
        """Settings with the secrets, instance id and unsigned allowances of the environment."""
        secrets = {
            provider: config.secret_list(var, commas=provider != "postmark")
            for provider, var in config.WEBHOOK_SECRETS.items()
        }
        values: dict = {
            "out": Path(out),
            "instance": config.collect_instance(),
            "secrets": {p: v for p, v in secrets.items() if v},
            "allow_unsigned": config.collect_allow_unsigned(),
            "mandrill_url": config.mandrill_webhook_url(),
            "bucket": config.collect_bucket(),
        }
        values.update(overrides)
        return cls(**values)


def build_verifiers(settings: CollectSettings, fetch: Fetcher = https_fetch) -> dict[str, Verifier]:
    """Each served provider's verifier; :class:`ConfigError` when none can be served."""
    unknown = settings.allow_unsigned - {*PROVIDERS, "all"}
    if unknown:
        raise ConfigError(
            f"{config.COLLECT_ALLOW_UNSIGNED}: unknown provider(s) {sorted(unknown)}; "
            f"use names of {', '.join(PROVIDERS)} or 'all'"
        )
    out: dict[str, Verifier] = {}
    for provider in PROVIDERS:
        keys = settings.secrets.get(provider)
        if keys:
            out[provider] = _signed(provider, keys, settings, fetch)
        elif provider in settings.allow_unsigned or "all" in settings.allow_unsigned:
            log.warning(
                "!!! %s webhooks are accepted UNSIGNED: anyone who finds the URL can write "
                "events into the experiment. Set %s and remove it from %s. !!!",
                provider,
                config.WEBHOOK_SECRETS[provider],
                config.COLLECT_ALLOW_UNSIGNED,
            )
            out[provider] = Unsigned(provider)
        else:
            log.info(
                "%s webhooks refused: %s is not set", provider, config.WEBHOOK_SECRETS[provider]
            )
    if not out:
        names = ", ".join(config.WEBHOOK_SECRETS.values())
        raise ConfigError(
            f"no webhook secret is set, so every request would be refused: set at least one of "
            f"{names} (or …_FILE); for a test only, {config.COLLECT_ALLOW_UNSIGNED}=<provider>"
        )
    return out


def _signed(provider: str, keys: list[str], settings: CollectSettings, fetch: Fetcher) -> Verifier:
    tol = settings.tolerance_s
    if provider == "sendgrid":
        return SendGridVerifier(keys, tol)
    if provider == "mailgun":
        # a token is remembered while its timestamp can pass: up to tol either side of now
        cache = TokenCache(settings.out / STATE_DIR / "mailgun-tokens.txt", 2 * tol + 60)
        return MailgunVerifier(keys, cache, tol)
    if provider == "ses":
        return SnsVerifier(keys, fetch)
    if provider == "postmark":
        return PostmarkVerifier(keys)
    if provider == "mandrill":
        return MandrillVerifier(keys, settings.mandrill_url)
    return KlaviyoVerifier(keys, tol)
