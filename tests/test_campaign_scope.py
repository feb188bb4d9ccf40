"""Events that belong to the send (issue 28): another mailing's events and earlier ones are not it.

A mixed export (this campaign's send plus a flash sale mailed to the same list, plus an earlier
mailing's events) must give the decision and statistics of the clean export, with the other
events quarantined as ``other_campaign`` / ``before_assignment`` and counted. The same rules on
Spark are in ``test_validation_parity.py``; the adapters' campaign fields are checked here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from loopexp import analyze_files, simulate_campaign
from loopexp.assignment.files import write_assignment_parquet
from loopexp.cli import app
from loopexp.core.errors import EventsError
from loopexp.core.keys import DEMO_KEY, HashKey
from loopexp.design.spec import load_spec, parse_spec
from loopexp.events.ingest import ingest
from loopexp.events.scope import (
    BEFORE_ASSIGNMENT,
    OTHER_CAMPAIGN,
    SendScope,
    assigned_at_of,
    send_scope,
    stamped,
)
from loopexp.metrics.engine import compute_metrics
from loopexp.sim.simulate import DEMO_EFFECTS
from tests.conftest import DEMO_SPEC

SENT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
READ = SENT + timedelta(days=10)  # every window closed
ASSIGNED = SENT - timedelta(days=1)


def scoped_spec(tmp_path: Path, campaign_ids: list[str] | None) -> Path:
    """The demo spec with ``data.campaign_ids`` (None: without the field)."""
    data = yaml.safe_load(DEMO_SPEC.read_text(encoding="utf-8"))
    if campaign_ids is not None:
        data["data"] = {"campaign_ids": campaign_ids}
    path = tmp_path / f"spec-{len(campaign_ids or [])}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """The send's clean export, the mixed one, and a stamped assignment."""
    folder = tmp_path_factory.mktemp("scope")
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 6_000, DEMO_EFFECTS, seed=11, send_at=SENT)
    clean, _ = campaign.write(folder / "clean")
    events = campaign.events
    assert set(events["campaign_id"]) == {spec.campaign}
    table = pa.Table.from_pandas(campaign.assignment, preserve_index=False)
    write_assignment_parquet(table, folder / "fresh.parquet")  # as `loopexp assign` writes it
    assignment = folder / "assignment.parquet"  # made the day before the send
    pq.write_table(stamped(table, ASSIGNED), assignment)
    # The flash sale went to the control arm's recipients only: every one of them clicked it.
    control = campaign.assignment.loc[campaign.assignment["variant_id"] == "control"]
    keys = control["recipient_key"].astype(str).tolist()
    at = pd.Timestamp(SENT + timedelta(hours=5))
    flash = pd.DataFrame(
        {
            "event_id": [f"flash-{t}-{i}" for t in ("d", "o", "c") for i in range(len(keys))],
            "provider": events["provider"].iloc[0],
            "event_type": [t for t in ("delivered", "open", "click") for _ in keys],
            "ts": at,
            "recipient_key": keys * 3,
            "campaign_id": "flash-sale",
            "is_machine_open": False,
            "is_bot_click": False,
        }
    )
    # An earlier mailing's clicks with no campaign field: only their time says they are not it.
    earlier = flash.loc[flash["event_type"] == "click"].head(500).copy()
    earlier["event_id"] = "old-" + earlier["event_id"]
    earlier["ts"] = pd.Timestamp(SENT - timedelta(days=9))
    earlier["campaign_id"] = None
    mixed = pd.concat([events, flash, earlier], ignore_index=True)
    (folder / "mixed").mkdir()
    mixed.to_parquet(folder / "mixed" / "events.parquet", index=False)
    return {
        "clean": clean,
        "mixed": folder / "mixed" / "events.parquet",
        "assignment": assignment,
        "fresh": folder / "fresh.parquet",
        "folder": folder,
        "n_flash": len(flash),
        "n_earlier": len(earlier),
    }


def test_the_assignment_records_when_it_was_made(exports):
    when = assigned_at_of(exports["fresh"])
    assert when is not None and abs(datetime.now(UTC) - when) < timedelta(hours=1)
    assert assigned_at_of(exports["assignment"]) == ASSIGNED
    assert assigned_at_of(exports["folder"] / "clean" / "assignment.parquet") is None  # unstamped
    scope = send_scope([" spring-newsletter ", "", "spring-newsletter"], exports["assignment"])
    assert scope.campaign_ids == ("spring-newsletter",)


def test_another_mailing_is_quarantined_and_the_decision_is_the_clean_exports(
    exports, tmp_path: Path
) -> None:
    spec = load_spec(scoped_spec(tmp_path, ["spring-newsletter"]))
    assignment = exports["assignment"]
    clean_table, clean = analyze_files(spec, exports["clean"], assignment, as_of=READ)
    table, mixed = analyze_files(
        spec, exports["mixed"], assignment, tmp_path / "quarantine.parquet", as_of=READ
    )
    assert table.quarantine_reasons == {
        OTHER_CAMPAIGN: exports["n_flash"],
        BEFORE_ASSIGNMENT: exports["n_earlier"],
    }
    assert mixed.data.quarantine_reasons == table.quarantine_reasons  # results.json counts them
    assert mixed.decision.status == clean.decision.status
    assert mixed.decision.winner == clean.decision.winner
    assert table.stats == clean_table.stats
    quarantined = pd.read_parquet(tmp_path / "quarantine.parquet")
    assert set(quarantined["campaign_id"].dropna()) == {"flash-sale"}
    # Without the field (and an unstamped assignment) the flash sale is read as the send's:
    # what the code did before, and what these rules exist to stop.
    unscoped = load_spec(scoped_spec(tmp_path, None))
    raw_table, raw = analyze_files(
        unscoped, exports["mixed"], exports["folder"] / "clean" / "assignment.parquet", as_of=READ
    )
    assert raw_table.quarantine_reasons == {}
    assert raw_table.get("click_rate", "control").sum > clean_table.get("click_rate", "control").sum
    # the clean send is still underpowered (keep testing); read with the flash sale it said
    # "no difference": another mailing's clicks changed the decision
    assert clean.decision.status.value == "keep_testing"
    assert raw.decision.status != clean.decision.status


def test_scope_rules_in_order_and_out_of_the_quarantine_share() -> None:
    """Canonical reasons first; other_campaign before before_assignment; no campaign field passes;
    and an export that is mostly another mailing's is not "too much bad data"."""
    t = pd.Timestamp(SENT)
    rows = [  # event_id, type, ts, recipient, campaign_id, expected reason
        ("a", "delivered", t, "k1", "spring", None),
        ("b", "open", t, "k1", " spring ", None),  # trimmed
        ("c", "open", t, "k2", None, None),  # no campaign field
        ("d", "open", t, "k2", "", None),
        *[(f"x{i}", "click", t, "k2", "newsletter", OTHER_CAMPAIGN) for i in range(8)],
        ("y", "click", t, "k1", "Spring", OTHER_CAMPAIGN),  # ids are exact
        ("z", "open", t - pd.Timedelta(days=3), "k2", "spring", BEFORE_ASSIGNMENT),
        ("w", "open", t - pd.Timedelta(days=3), "k2", "newsletter", OTHER_CAMPAIGN),
        ("", "open", t, "k2", "newsletter", "missing event_id"),
    ]
    events = pd.DataFrame(
        [r[:-1] for r in rows],
        columns=["event_id", "event_type", "ts", "recipient_key", "campaign_id"],
    ).assign(provider="esp")
    assignment = pd.DataFrame(
        {"recipient_key": ["k1", "k2"], "segment": ["new", "new"], "variant_id": ["a", "b"]}
    )
    scope = SendScope(("spring",), ASSIGNED)
    expected: dict[str, int] = {}
    for *_, reason in rows:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    # 11 of 15 events quarantined, but only 1 of the 4 events left is malformed: no stop at 0.5
    table = compute_metrics(
        events, assignment, ["open_rate"], scope=scope, max_quarantine_share=0.5
    )
    assert table.quarantine_reasons == expected
    assert compute_metrics(events, assignment, ["open_rate"]).quarantine_reasons == {
        "missing event_id": 1
    }
    # every event another campaign's: a clear error naming the reason, not "no difference"
    others = events.assign(campaign_id="newsletter", event_id=[f"e{i}" for i in range(len(rows))])
    with pytest.raises(EventsError, match=r"other_campaign.*data\.campaign_ids"):
        compute_metrics(others, assignment, ["open_rate"], scope=scope, require_match=True)


def test_spec_field_is_validated_and_keeps_old_fingerprints(tmp_path: Path) -> None:
    plain = load_spec(scoped_spec(tmp_path, None))
    assert plain.sha256() == load_spec(DEMO_SPEC).sha256()
    assert load_spec(scoped_spec(tmp_path, [])).sha256() == plain.sha256()  # empty = absent
    scoped = load_spec(scoped_spec(tmp_path, ["spring-newsletter"]))
    assert scoped.sha256() != plain.sha256()
    assert parse_spec(scoped.to_yaml()).data.campaign_ids == ["spring-newsletter"]
    bad = scoped_spec(tmp_path, ["  "])
    with pytest.raises(Exception, match="campaign_ids"):
        load_spec(bad)


def test_ingest_and_metrics_report_the_events_outside_the_send(exports, tmp_path: Path) -> None:
    spec_path = scoped_spec(tmp_path, ["spring-newsletter"])
    summary = ingest(
        [exports["mixed"]],
        tmp_path / "ingested",
        key=HashKey(DEMO_KEY, "demo"),
        scope=send_scope(["spring-newsletter"], None),
    )
    assert summary.outside_scope == {OTHER_CAMPAIGN: exports["n_flash"]}
    written = json.loads((tmp_path / "ingested" / "ingest_summary.json").read_text())
    assert written["outside_scope"] == summary.outside_scope
    args = ["metrics", str(spec_path), "--events", str(exports["mixed"])]
    args += ["--assignment", str(exports["assignment"]), "--json"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["quarantine_reasons"][OTHER_CAMPAIGN] == exports["n_flash"]


ESP = Path(__file__).parent / "data" / "esp"


def _campaigns(path: Path | list[Path], out: Path, **kwargs) -> list:
    summary = ingest(path, out, key=HashKey(DEMO_KEY, "demo"), **kwargs)
    return sorted(pd.read_parquet(summary.events_path)["campaign_id"].tolist(), key=str)


def test_adapters_read_the_providers_campaign_fields(tmp_path: Path) -> None:
    sendgrid = ESP / "sendgrid"
    assert _campaigns(sendgrid / "event_webhook_category_as_array.json", tmp_path / "a") == [
        "newuser",  # an array's first category
        "olduser",
    ]
    assert _campaigns(sendgrid / "event_webhook_open.json", tmp_path / "b") == ["cat facts"]
    # Mailgun: no campaign and no user variables: the first tag
    mailgun = ESP / "mailgun" / "webhook_event_data_clicked.json"
    assert _campaigns(mailgun, tmp_path / "c") == ["webhook_payload"]
    # Postmark: Metadata.campaign_id, else the Tag, unless the Tag names the variant
    lines = (ESP / "constructed" / "postmark_open_click_delivery.ndjson").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    records[0]["Metadata"]["campaign_id"] = "spring"
    postmark = tmp_path / "postmark.ndjson"
    postmark.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    assert _campaigns(postmark, tmp_path / "d") == ["spring"] + ["welcome-email"] * 3
    from loopexp.events.config import IngestConfig

    by_tag = IngestConfig(variant_map={"welcome-email": "b"})
    assert _campaigns(postmark, tmp_path / "e", config=by_tag) == [None, None, None, "spring"]


def test_a_flow_test_quarantines_another_campaigns_events_too(tmp_path: Path) -> None:
    from loopexp.analysis.flow import analyze_flow_files
    from loopexp.sim.flows import DEMO_FLOW_TRUTHS, simulate_flow

    root = Path(__file__).resolve().parents[1] / "experiments"
    data = yaml.safe_load((root / "welcome_flow_timing.yaml").read_text(encoding="utf-8"))
    spec = parse_spec(yaml.safe_dump(data))
    sim = simulate_flow(spec, DEMO_FLOW_TRUTHS["welcome"], 3000, 14, seed=5).as_of(30)
    events_path, assignment = sim.write(tmp_path / "flow")
    events = pd.read_parquet(events_path)
    assert set(events["campaign_id"]) == {spec.campaign}
    other = events.loc[events["event_type"] == "order"].assign(campaign_id="newsletter")
    other["event_id"] = "other-" + other["event_id"].astype(str)
    pd.concat([events, other]).to_parquet(tmp_path / "mixed.parquet", index=False)
    data["data"] = {"campaign_ids": [spec.campaign]}
    scoped = parse_spec(yaml.safe_dump(data))
    clean = analyze_flow_files(scoped, events_path, assignment).results
    mixed = analyze_flow_files(scoped, tmp_path / "mixed.parquet", assignment).results
    assert mixed.data.quarantine_reasons == {OTHER_CAMPAIGN: len(other)}
    assert mixed.decision.status == clean.decision.status
    assert [c.estimate for c in mixed.comparisons] == [c.estimate for c in clean.comparisons]


def test_ses_reads_the_campaign_tag(tmp_path: Path) -> None:
    record = json.loads((ESP / "ses" / "event_record_Click.json").read_text(encoding="utf-8"))
    record["mail"]["tags"]["campaign_id"] = ["spring"]
    path = tmp_path / "ses.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    assert _campaigns(path, tmp_path / "a") == ["spring"]
    record["mail"]["tags"]["campaign"] = ["summer"]  # the `campaign` tag first
    path.write_text(json.dumps(record), encoding="utf-8")
    assert _campaigns(path, tmp_path / "b") == ["summer"]
