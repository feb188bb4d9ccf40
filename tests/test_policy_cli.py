"""``loopexp policy`` end to end on simulated events, and the engine's policy inputs (issue 27)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.cli.errors import EXIT_INPUT
from loopexp.design.spec import load_spec
from loopexp.events.schema import EVENT_SCHEMA
from loopexp.metrics.features import history_features, recipient_outcomes
from loopexp.run.notebook import execute
from loopexp.sim.simulate import TrueEffects, simulate_campaign, write_events
from tests.conftest import DEMO_SPEC, ROOT

runner = CliRunner()

#: "personal" wins among prospects, loses among existing customers: the winner flips by segment.
FLIPPED = TrueEffects(
    segment_click={
        "prospect": {"personal": 3.0},
        "existing_customer": {"personal": 0.5, "urgency": 0.5},
    }
)


@pytest.fixture(scope="module")
def send(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("policy-send")
    campaign = simulate_campaign(load_spec(DEMO_SPEC), 24_000, FLIPPED, seed=4)
    events, assignment = campaign.write(folder)
    rng = np.random.default_rng(1)
    features = folder / "features.csv"
    keys = campaign.assignment["recipient_key"]
    pd.DataFrame({"recipient_key": keys, "tenure_days": rng.integers(0, 900, len(keys))}).to_csv(
        features, index=False
    )
    return events, assignment, features


def test_policy_json_learns_the_flipped_winner(send: tuple[Path, Path, Path]) -> None:
    events, assignment, features = send
    args = ["policy", str(DEMO_SPEC), "--events", str(events), "--assignment", str(assignment)]
    result = runner.invoke(app, [*args, "--features", str(features), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) >= {"chosen", "candidates", "method", "folds"}
    assert (out["method"], out["folds"]) == ("aipw", 5)
    assert out["chosen"]["kind"] == "segment", out["chosen"]
    assert "prospect → variant personal" in out["chosen"]["rules"]
    assert [c["kind"] for c in out["candidates"]] == ["single", "segment", "tree"]
    keys = {"name", "kind", "value", "ci_low", "ci_high", "gain", "gain_ci_low", "gain_ci_high"}
    for c in out["candidates"]:
        assert keys <= set(c)
        assert c["ci_low"] <= c["value"] <= c["ci_high"]
    readable = runner.invoke(app, args)
    assert readable.exit_code == 0, readable.output
    assert "Chosen:" in readable.output and "best arm per segment" in readable.output


def test_a_feature_table_missing_recipients_exits_2(
    send: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    events, assignment, features = send
    partial = tmp_path / "partial.csv"
    pd.read_csv(features).iloc[:100].to_csv(partial, index=False)
    args = ["policy", str(DEMO_SPEC), "--events", str(events), "--assignment", str(assignment)]
    result = runner.invoke(app, [*args, "--features", str(partial), "--json"])
    assert result.exit_code == EXIT_INPUT, result.output
    assert "feature table lacks" in result.output


def test_outcomes_and_history_features_come_from_the_engine(tmp_path: Path) -> None:
    ts = pd.to_datetime(
        [
            "2026-01-01 08:00",  # r1 first event (tenure 59 days before 2026-03-01)
            "2026-02-20 18:10",  # r1 human click at 18h (recency 9 days)
            "2026-02-25 09:00",  # r1 bot click: neither recency nor frequency
            "2026-02-10 07:00",  # r2 machine open only
            "2026-03-02 10:00",  # r2 click after as_of: not history
        ],
        utc=True,
    )
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(5)],
            "provider": "test",
            "event_type": ["send", "click", "click", "open", "click"],
            "ts": ts,
            "recipient_key": ["r1", "r1", "r1", "r2", "r2"],
            "campaign_id": "c",
            "variant_id": "a",
            "is_machine_open": [None, None, None, True, None],
            "is_bot_click": [None, False, True, None, False],
        }
    )
    for name in EVENT_SCHEMA.names:
        if name not in events:
            events[name] = None
    path = write_events(events, tmp_path / "history.parquet")
    got = history_features(path, datetime(2026, 3, 1, tzinfo=UTC)).set_index("recipient_key")
    assert got.loc["r1"].to_dict() == {
        "recency_days": 9.0,
        "frequency": 1.0,
        "tenure_days": 59.0,
        "past_click_hour": 18.0,
        "machine_open": 0.0,
    }
    assert got.loc["r2", "recency_days"] == 9999 and got.loc["r2", "machine_open"] == 1.0
    assert got.loc["r2", "past_click_hour"] == -1
    assignment = pd.DataFrame(
        {"recipient_key": ["r1", "r2", "r3"], "segment": "prospect", "variant_id": "a"}
    )
    y = recipient_outcomes(path, assignment, "click_rate").table.set_index("recipient_key")["y"]
    assert y.to_dict() == {"r1": 1.0, "r2": 1.0, "r3": 0.0}  # a bot click alone is no click


def test_policy_notebook_shows_candidates_rules_and_writes_the_json(tmp_path: Path) -> None:
    result = tmp_path / "out" / "policy.json"
    executed = execute(
        ROOT / "notebooks" / "policy.ipynb",
        tmp_path / "policy.ipynb",
        {"result_path": str(result)},
        cwd=tmp_path,
    )
    out = json.loads(result.read_text())
    assert out["chosen"]["kind"] == "segment"
    assert "prospect → variant personal" in out["chosen"]["rules"]
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "Chosen: best arm per segment" in text and "Policy for other tools:" in text
