"""Events carry the flow: the optional ``flow_id`` / ``step_id`` columns, mapped by adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from loopexp.core.keys import HashKey
from loopexp.events.ingest import ingest
from loopexp.events.schema import EVENT_SCHEMA, FLOW_COLUMNS

ESP = Path(__file__).parent / "data" / "esp"
KEY = HashKey(b"test-secret-for-flow-events", "test")


def _events(path: Path, out: Path) -> pd.DataFrame:
    summary = ingest(path, out, key=KEY)
    return pd.read_parquet(summary.events_path)


def test_flow_columns_are_optional_canonical_columns() -> None:
    assert set(FLOW_COLUMNS) <= set(EVENT_SCHEMA.names)
    assert EVENT_SCHEMA.names[-2:] == ["flow_id", "step_id"]  # appended: no column moved


def test_braze_canvas_and_step(tmp_path: Path) -> None:
    path = ESP / "braze" / "currents_custom_http_users.messages.email.Send.json"
    row = _events(path, tmp_path).iloc[0]
    assert row["flow_id"] == row["step_id"] == "f47ac10b-58cc-4372-a567-0e02b2c3d479"


def test_klaviyo_flow_message_and_a_campaign_without_flow(tmp_path: Path) -> None:
    page = json.loads((ESP / "constructed" / "klaviyo_events_page.json").read_text())
    plain = _events(ESP / "constructed" / "klaviyo_events_page.json", tmp_path / "plain")
    assert plain["flow_id"].isna().all() and plain["step_id"].isna().all()
    for event in page["data"]:
        event["attributes"]["event_properties"]["$flow"] = "WelcomeFlow1"
    flow_page = tmp_path / "klaviyo_flow_page.json"
    flow_page.write_text(json.dumps(page))
    ev = _events(flow_page, tmp_path / "flow")
    assert set(ev["flow_id"]) == {"WelcomeFlow1"} and set(ev["step_id"]) == {"01HF3Z"}


def test_sendgrid_custom_args(tmp_path: Path) -> None:
    records = json.loads((ESP / "sendgrid" / "event_webhook_bounce.json").read_text())
    plain = _events(ESP / "sendgrid" / "event_webhook_bounce.json", tmp_path / "plain")
    assert plain["flow_id"].isna().all()
    records[0].update(flow_id="welcome", step_id="second_mail")
    path = tmp_path / "sendgrid_flow.json"
    path.write_text(json.dumps(records))
    row = _events(path, tmp_path / "flow").iloc[0]
    assert (row["flow_id"], row["step_id"]) == ("welcome", "second_mail")
