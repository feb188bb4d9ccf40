"""Every registered adapter, on its provider's published samples, keeps ingest's promises.

Parametrised over the registry (so a new adapter is held to the same rules the day it registers):
each provider's samples in ``tests/data/esp/<provider>/`` (copies of the providers' published
payloads, sources in ``tests/data/esp/SOURCES.md``; ``constructed/<provider>_*`` where a provider
publishes none) are ingested and the output checked: canonical schema and values, the same bytes
from the same input, every record accounted for (a malformed one quarantined with a reason), no
raw e-mail address anywhere in the output. Also: the registry lists every provider that has
samples, and no events module outside ``adapters/`` names a provider.
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from loopexp.core.keys import EMAIL_PATTERN, HashKey
from loopexp.events.adapters import registry
from loopexp.events.adapters.base import Context
from loopexp.events.adapters.registry import VerificationUnsupportedError
from loopexp.events.ingest import ingest
from loopexp.events.reader import json_units
from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, TS_MAX, TS_MIN

ESP = Path(__file__).parent / "data" / "esp"
EVENTS_PACKAGE = Path(__file__).resolve().parents[1] / "loopexp" / "events"
KEY = HashKey(b"conformance-secret", "test")

#: Published files that are not event payloads (a webhook's signature block, a schema excerpt).
NOT_EVENTS = {
    "mailgun/webhook_signature.json",
    "mailgun/webhook_signature_subaccount.json",
    "klaviyo/openapi_get_events_schemas_excerpt.json",
}


def samples(provider: str) -> list[Path]:
    """The provider's sample payloads: published ones, then constructed ones."""
    found = sorted((ESP / provider).glob("*")) + sorted((ESP / "constructed").glob(f"{provider}_*"))
    return [p for p in found if f"{p.parent.name}/{p.name}" not in NOT_EVENTS]


PROVIDERS = registry.providers()


def _ingest(paths: list[Path], out: Path, **kwargs) -> tuple[object, pd.DataFrame, pd.DataFrame]:
    summary = ingest(paths, out, key=KEY, **kwargs)
    return summary, pd.read_parquet(summary.events_path), pd.read_parquet(summary.quarantine_path)


def _accounted(summary) -> None:
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined
    assert sum(f.input_records for f in summary.files) == summary.input_records


def _no_address(out: Path) -> None:
    for name in ("events.parquet", "quarantine.parquet"):
        frame = pd.read_parquet(out / name)
        for column in frame.columns:
            # a Message-ID is local@host by RFC 5322: an id, not the recipient's address
            if frame[column].dtype == object and column != "message_id":
                texts = frame[column].dropna().astype(str)
                leaked = [t for t in texts if EMAIL_PATTERN.search(t)]
                assert not leaked, f"{name}.{column} holds an address: {leaked[:1]}"
    assert not EMAIL_PATTERN.search((out / "ingest_summary.json").read_text("utf-8"))


def test_the_registry_lists_every_provider_with_samples() -> None:
    folders = {p.name for p in ESP.iterdir() if p.is_dir()} - {"constructed"}
    assert folders, f"no samples under {ESP}"
    assert folders <= set(PROVIDERS), (
        f"samples of unregistered adapters: {folders - set(PROVIDERS)}"
    )
    assert len(set(registry.format_names())) == len(registry.format_names()), "a format twice"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_adapter_declares_the_interface(provider: str) -> None:
    adapter = registry.by_format(provider)
    assert adapter is not None and adapter.name == provider
    assert adapter.formats and all(registry.by_format(f) is adapter for f in adapter.formats)
    with pytest.raises(VerificationUnsupportedError):  # nobody verifies signatures yet (#24)
        adapter.verify({}, b"{}", {})
    first = [p for p in samples(provider) if p.suffix == ".json"]
    for path in first:  # each published JSON payload is recognised as this provider's, by it
        unit = next(u for u in json_units(path.read_text("utf-8")) if u.reason is None)
        if registry.control(unit.value) is not None:  # an SNS subscription confirmation
            assert registry.control(unit.value) is adapter, path.name
            assert registry.detect(unit.value) is None, f"{path.name}: a control message"
            continue
        assert registry.detect(unit.value) is adapter, path.name
        assert all(isinstance(ctx, Context) for _, ctx in adapter.expand(unit.value))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_samples_give_canonical_events_every_record_accounted_for(
    provider: str, tmp_path: Path
) -> None:
    paths = samples(provider)
    assert paths, f"adapter {provider!r} has no samples under {ESP}"
    summary, events, quarantine = _ingest(paths, tmp_path / "out")
    _accounted(summary)
    assert summary.events > 0
    assert {f.format for f in summary.files} <= set(registry.by_format(provider).formats)
    assert pq.read_schema(summary.events_path).remove_metadata() == EVENT_SCHEMA
    assert set(events["provider"]) == {provider}
    assert set(events["event_type"]) <= set(EVENT_TYPES)
    ts = events["ts"]
    assert str(ts.dt.tz) == str(UTC) and ts.notna().all()
    assert ((ts >= pd.Timestamp(TS_MIN)) & (ts < pd.Timestamp(TS_MAX))).all()
    assert events["recipient_key"].str.fullmatch(r"[0-9a-f]{32}").all(), "keys are hashed"
    assert not events.duplicated(["provider", "event_id"]).any()
    assert len(quarantine) == summary.quarantined and quarantine["reason"].str.len().gt(0).all()
    _no_address(tmp_path / "out")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_same_bytes_in_same_bytes_out(provider: str, tmp_path: Path) -> None:
    paths = samples(provider)
    _ingest(paths, tmp_path / "a")
    _ingest(paths, tmp_path / "b")
    for name in ("events.parquet", "quarantine.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_records_are_quarantined_with_a_reason(provider: str, tmp_path: Path) -> None:
    """One good record and two broken ones (cut JSON, not an object): nothing is lost."""
    sample = next(p for p in samples(provider) if p.suffix == ".json")
    first = next(u for u in json_units(sample.read_text("utf-8")) if u.reason is None)
    good = tmp_path / "good.ndjson"
    good.write_text(json.dumps(first.value) + "\n", "utf-8")
    export = tmp_path / "export.ndjson"
    export.write_text(good.read_text("utf-8") + '{"cut": \n42\n', "utf-8")
    before, _, _ = _ingest([good], tmp_path / "good", fmt=provider)
    summary, _, quarantine = _ingest([export], tmp_path / "out", fmt=provider)
    _accounted(summary)
    assert summary.input_records == before.input_records + 2
    assert summary.quarantined == before.quarantined + 2
    assert (summary.events, summary.duplicates) == (before.events, before.duplicates)
    broken = quarantine[quarantine["input_no"] > before.input_records]
    assert len(broken) == 2 and broken["reason"].str.len().gt(0).all()
    assert summary.errors >= 2
    _no_address(tmp_path / "out")


_PROVIDER_WORDS = re.compile(r"\b(" + "|".join(map(re.escape, PROVIDERS)) + r")\b", re.IGNORECASE)


def test_no_events_module_outside_adapters_names_a_provider() -> None:
    """Providers live in their adapters; the generic ingest only asks the registry."""
    named = {
        f"{path.relative_to(EVENTS_PACKAGE)}:{n}: {m.group(0)}"
        for path in sorted(EVENTS_PACKAGE.rglob("*.py"))
        if "adapters" not in path.relative_to(EVENTS_PACKAGE).parts
        for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        for m in _PROVIDER_WORDS.finditer(line)
    }
    assert not named, "provider names outside events/adapters/:\n" + "\n".join(sorted(named))


def test_the_provider_name_check_can_fail() -> None:
    assert _PROVIDER_WORDS.search(f"if fmt == '{PROVIDERS[0]}':")
    assert not _PROVIDER_WORDS.search("a provider's own A/B field")
