"""Decisions read when their outcomes have arrived (issue 28).

Maturity windows per metric, the engine's censoring of recipients whose window has not closed
(DuckDB here, Spark in ``test_maturity_spark.py``), the read time of a fixed-horizon one-off send
and its wiring through ``analyze_files``, ``results.json``, MLflow and ``loopexp run`` (exit 3).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.maturity import read_time, webhook_retry_lag
from loopexp.analysis.results import ExperimentResults, Status
from loopexp.cli import app
from loopexp.core import tags
from loopexp.events import completeness, rawlog
from loopexp.metrics.definitions import (
    LIBRARY,
    AttributionWindow,
    Measure,
    MetricDef,
    maturity_hours,
)
from loopexp.metrics.engine import compute_metrics
from loopexp.sim.simulate import DEMO_EFFECTS
from tests.conftest import DEMO_SPEC

SENT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_default_windows_of_the_standard_metrics() -> None:
    assert maturity_hours(LIBRARY["click_rate"]) == 72
    assert maturity_hours(LIBRARY["open_rate"]) == 72
    assert maturity_hours(LIBRARY["unsubscribe_rate"]) == 72
    assert maturity_hours(LIBRARY["conversion_rate"]) == 168
    assert maturity_hours(LIBRARY["revenue_per_delivered"]) == 168
    assert maturity_hours(LIBRARY["complaint_rate"]) == 168
    within_two_days = MetricDef(
        name="orders_48h",
        kind="proportion",
        numerator=Measure(events=["order"], window=AttributionWindow(hours=48)),
        denominator="sent",
    )
    assert maturity_hours(within_two_days) == 48  # nothing after its window counts


def _events(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "provider": "test",
            "event_type": [r[1] for r in rows],
            "ts": [pd.Timestamp(SENT + timedelta(hours=r[2])) for r in rows],
            "recipient_key": [r[0] for r in rows],
            "campaign_id": "spring",
        }
    )


def test_the_engine_censors_recipients_whose_window_has_not_closed() -> None:
    # a: sent at 0 h, clicked at 10 h; b: sent at 50 h, clicked at 51 h; c: sent at 0 h, no click;
    # d: on the assignment without any event (counts from the last send, 50 h).
    events = _events(
        [
            ("a", "send", 0),
            ("a", "delivered", 0.1),
            ("a", "click", 10),
            ("b", "send", 50),
            ("b", "delivered", 50.1),
            ("b", "click", 51),
            ("c", "send", 0),
            ("c", "delivered", 0.1),
        ]
    )
    assignment = pd.DataFrame(
        {"recipient_key": list("abcd"), "segment": "active", "variant_id": "control"}
    )
    defs = ["click_rate", "delivery_rate"]
    at_80h = compute_metrics(events, assignment, defs, as_of=SENT + timedelta(hours=80))
    click = at_80h.get("click_rate", "control")
    assert (click.n, click.sum) == (2, 1.0)  # a and c matured; b (sent at 50 h) is censored
    delivery = at_80h.get("delivery_rate", "control")
    assert (delivery.n, delivery.sum) == (2, 2.0)  # d counts from the last send: censored too
    assert at_80h.last_sent_at == SENT + timedelta(hours=50)  # b, the last recipient sent
    later = compute_metrics(events, assignment, defs, as_of=SENT + timedelta(hours=130))
    assert (later.get("click_rate", "control").n, later.get("click_rate", "control").sum) == (3, 2)
    assert later.get("delivery_rate", "control").n == 4
    uncensored = compute_metrics(events, assignment, defs)
    assert uncensored.stats == later.stats


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """The demo send (+30 % true open effect), 20,000 recipients, and its files cut at 2 h."""
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 20_000, DEMO_EFFECTS, seed=7, send_at=SENT)
    folder = tmp_path_factory.mktemp("maturity")
    full = campaign.write(folder / "full")
    early = campaign.as_of(SENT + timedelta(hours=2)).write(folder / "early")
    return spec, full, early


def test_a_fixed_one_off_send_is_read_only_after_its_final_read_time(demo) -> None:
    spec, full, early = demo
    table, res = analyze_files(spec, *early, as_of=SENT + timedelta(hours=2))
    d = res.decision
    assert d.status == Status.KEEP_TESTING and d.winner is None
    final = read_time(spec, table.last_sent_at).final_read_at
    assert d.final_read_at is not None and d.final_read_at.startswith("2026-03-05T09:0")
    assert final is not None and final.strftime("%Y-%m-%d %H:%M") in d.reasons[0]
    assert d.reasons[0].startswith("Final read at 2026-03-05 09:0")
    assert d.rel_lift is None  # an immature lift is not quoted
    # the whole data, read just before the final read time: still keep testing
    _, res = analyze_files(spec, *full, as_of=SENT + timedelta(hours=71))
    assert res.decision.status == Status.KEEP_TESTING
    # after it: the decision is made on the matured outcomes
    _, res = analyze_files(spec, *full, as_of=SENT + timedelta(hours=80))
    assert res.decision.status == Status.SHIP
    assert not any("Final read" in r for r in res.decision.reasons)


def test_decision_read_at_overrides_the_final_read_time(demo) -> None:
    spec, full, _ = demo
    later = SENT + timedelta(days=10)
    spec = spec.model_copy(update={"decision": spec.decision.model_copy(update={"read_at": later})})
    _, res = analyze_files(spec, *full, as_of=SENT + timedelta(days=9))
    assert res.decision.status == Status.KEEP_TESTING
    assert res.decision.final_read_at == "2026-03-12T09:00:00Z"
    assert "decision.read_at" in res.decision.reasons[0]
    _, res = analyze_files(spec, *full, as_of=later)
    assert res.decision.status == Status.SHIP


def test_sequential_looks_early_only_on_matured_recipients(demo) -> None:
    spec, _, early = demo
    spec = spec.model_copy(
        update={"decision": spec.decision.model_copy(update={"method": "sequential"})}
    )
    table, res = analyze_files(spec, *early, as_of=SENT + timedelta(hours=2))
    # 2 hours after the send no recipient's 72 h window has closed: nothing is compared
    assert all(s.n == 0 for s in table.stats if s.metric == "click_rate")
    assert res.decision.status == Status.KEEP_TESTING
    assert not any("Final read at" in r for r in res.decision.reasons)


def test_results_json_and_the_spec_keep_their_contracts(demo, tmp_path: Path) -> None:
    spec, _, early = demo
    _, res = analyze_files(spec, *early, as_of=SENT + timedelta(hours=2))
    back = ExperimentResults.read_json(res.write_json(tmp_path / "results.json"))
    assert back.decision.final_read_at == res.decision.final_read_at
    assert back.decision.before_final_read is True
    # a spec without read_at keeps the fingerprint of earlier runs (the field is new)
    assert "read_at" not in spec.to_yaml()
    with_read_at = spec.model_copy(
        update={"decision": spec.decision.model_copy(update={"read_at": SENT})}
    )
    assert with_read_at.sha256() != spec.sha256()


def test_events_received_by_webhook_add_the_providers_retry_lag(demo, tmp_path: Path) -> None:
    """Webhook events (ingest wrote completeness.json from the raw log) are final 24 h later."""
    spec, full, _ = demo
    events, assignment = full
    folder = tmp_path / "ingest"
    folder.mkdir()
    shutil.copy(events, folder / "events.parquet")
    segment = folder / "receiver-1-000001.wlog"  # one SendGrid request in the raw log
    segment.write_bytes(rawlog.encode("sendgrid", SENT.timestamp() + 60, {}, b"[]"))
    report = completeness.completeness([segment], folder / "events.parquet")
    assert report is not None and report["retry_window_hours"] == 24.0
    completeness.write(report, folder)
    assert webhook_retry_lag(folder / "events.parquet") == 24.0
    assert webhook_retry_lag(events) == 0.0  # exports: no retry lag
    # 80 h after the send: past the 72 h windows, but SendGrid may still retry for 24 h
    table, res = analyze_files(
        spec, folder / "events.parquet", assignment, as_of=SENT + timedelta(hours=80)
    )
    d = res.decision
    assert d.status == Status.KEEP_TESTING
    assert d.final_read_at is not None and d.final_read_at.startswith("2026-03-06T09:0")
    assert "plus 24 h for the webhook providers' retries" in d.reasons[0]
    # nobody's outcome counts as final yet (window + retry lag), the export's do at 80 h
    assert all(s.n == 0 for s in table.stats if s.metric == "click_rate")
    export, _ = analyze_files(spec, events, assignment, as_of=SENT + timedelta(hours=80))
    assert all(s.n > 0 for s in export.stats if s.metric == "click_rate")
    # the same events as an export are read at 80 h (the test above), and these after 96 h
    _, res = analyze_files(
        spec, folder / "events.parquet", assignment, as_of=SENT + timedelta(hours=97)
    )
    assert res.decision.status == Status.SHIP


@pytest.mark.integration
def test_loopexp_run_two_hours_after_the_send_exits_3_with_the_final_read_time(
    tmp_path: Path,
) -> None:
    """The scheduled path, on the wall clock: events of a send that ended 2 hours ago."""
    spec_path = Path(shutil.copy(DEMO_SPEC, tmp_path / DEMO_SPEC.name))
    now = datetime.now(UTC)
    sent = now - timedelta(hours=2)
    campaign = simulate_campaign(load_spec(spec_path), 6_000, DEMO_EFFECTS, seed=3, send_at=sent)
    events, assignment = campaign.as_of(now).write(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", str(spec_path), "--events", str(events), "--assignment", str(assignment)]
    args += ["--out", str(tmp_path / "out"), "--tracking-uri", uri]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    results = ExperimentResults.read_json(tmp_path / "out" / "results.json")
    final = results.decision.final_read_at
    assert results.decision.status == Status.KEEP_TESTING and final is not None
    expected = sent + timedelta(hours=72)
    got = datetime.fromisoformat(final.replace("Z", "+00:00"))
    assert abs((got - expected).total_seconds()) < 600  # the demo sends over 5 minutes
    assert "final read at" in result.output.lower()
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags[tags.DECISION_FINAL_READ_AT] == final
    assert run.data.tags[tags.DECISION_STATUS] == "keep_testing"
