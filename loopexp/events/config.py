"""Settings of ``loopexp ingest``: how to read variants, which machine-open / bot-click rules apply.

Every threshold has a documented default and can be set in the spec's optional ``ingest:`` section
(or passed to :func:`loopexp.events.ingest.ingest` directly).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: The bot-rule codes written to ``bot_reason``, in the order they are tried (first match wins).
BOT_RULES: tuple[str, ...] = (
    "provider_flag",
    "scanner_user_agent",
    "apple_proxy",
    "open_soon_after_delivery",
    "click_soon_after_delivery",
    "link_burst",
)

#: User agents of link scanners and security gateways that fetch every link of a message
#: (substrings, case-insensitive). Sources: the vendors' own documentation of their crawlers and
#: the ESPs' bot-click guides; extend it in the spec for your audience.
DEFAULT_SCANNER_AGENTS: tuple[str, ...] = (
    "barracuda",
    "proofpoint",
    "mimecast",
    "symantec",
    "messagelabs",
    "fortiguard",
    "trendmicro",
    "sophos",
    "safelinks",
    "microsoft office protocol discovery",
    "ms-office",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "curl/",
    "wget/",
    "java/",
    "okhttp",
    "bot",
    "crawler",
    "spider",
    "scanner",
)


class IngestConfig(BaseModel):
    """What ``loopexp ingest`` needs beyond the files themselves (all fields have defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant_field: str = "variant"
    """Name of the custom field carrying the variant id: a custom arg, user variable, message
    tag, metadata key or event property, as each adapter's docstring says. A provider's own A/B
    field is read when it is absent. Left empty, the assignment decides."""
    variant_map: dict[str, str] = Field(default_factory=dict)
    """Provider variant label → spec variant id (e.g. a variation id → ``personal``)."""
    rules: list[str] = Field(default_factory=lambda: list(BOT_RULES))
    """Machine-open / bot-click rules to apply (codes of :data:`BOT_RULES`)."""
    apple_proxy_user_agents: list[str] = Field(default_factory=lambda: ["Mozilla/5.0"])
    """Exact user agents of Apple Mail Privacy Protection's image proxy."""
    apple_proxy_ip_prefixes: list[str] = Field(default_factory=lambda: ["17."])
    """IP prefixes of Apple's proxy (17.0.0.0/8 is Apple's own network)."""
    scanner_user_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SCANNER_AGENTS))
    """Case-insensitive substrings of link-scanner user agents."""
    open_after_delivery_s: Annotated[float, Field(ge=0)] = 2.0
    """An open this soon after delivery (seconds) is a machine open (prefetch, scanner)."""
    click_after_delivery_s: Annotated[float, Field(ge=0)] = 10.0
    """A click this soon after delivery (seconds) is a bot click (security scanner)."""
    burst_min_links: Annotated[int, Field(ge=2)] = 3
    """At least this many distinct links of one message clicked ..."""
    burst_window_s: Annotated[float, Field(ge=0)] = 2.0
    """... within this many seconds: every one of those clicks is a bot click."""
    columns: dict[str, str] = Field(default_factory=dict)
    """For plain CSV / Parquet: canonical column → the file's column (``email`` for an address
    to hash, or ``recipient_key`` for an already-hashed key; ``event_type``, ``ts``, ...)."""
    event_types: dict[str, str] = Field(default_factory=dict)
    """For plain CSV / Parquet: the file's event labels → canonical event types, or ``ignore``
    for labels that are not outcomes (quarantined as ``ignored_type``, not an error)."""
