"""The analysis of an iteration that deploys a policy (issue 27): variants compared and the split
checked on the exploration share only, through a real ``loopexp run``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import loopexp as lx
from loopexp.analysis.results import ExperimentResults, Status
from loopexp.cli import app
from loopexp.design.spec import load_spec
from loopexp.learn.policy.step import POLICY_ARTIFACT, PolicyStep
from loopexp.sim.simulate import TrueEffects, simulate_campaign
from tests.conftest import DEMO_SPEC

runner = CliRunner()
FLIPPED = TrueEffects(
    segment_click={
        "prospect": {"personal": 3.0},
        "existing_customer": {"personal": 0.5, "urgency": 0.5},
    }
)
N = 24_000


def _policy_spec(tmp_path: Path) -> Path:
    """Iteration 2 of the demo with rules deployed: prospects get ``personal``, the rest control."""
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["iteration"] = 2
    data["salt"] = "policy-analysis-iter-2"
    data["variants"][1]["weight"] = 3.0  # weights a policy ignores: an SRM against them fails
    data["policy"] = {
        "kind": "segment",
        "exploration": 0.2,
        "projected_gain": 0.004,
        "projected_gain_ci": [0.001, 0.007],
        "rules": [
            {
                "when": [{"feature": "segment", "op": "==", "value": "prospect"}],
                "action": "personal",
            },
            {"action": "control"},
        ],
    }
    path = tmp_path / "policy-iter2.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _run(
    spec_path: Path, events: Path, assignment: Path, out: Path, db: Path, codes: tuple[int, ...]
) -> ExperimentResults:
    result = runner.invoke(
        app,
        [
            "run",
            str(spec_path),
            "--events",
            str(events),
            "--assignment",
            str(assignment),
            "--out",
            str(out),
            "--tracking-uri",
            f"sqlite:///{db}",
        ],
    )
    assert result.exit_code in codes, result.output
    (kept,) = out.glob("attempts/*/results.json")
    return ExperimentResults.read_json(kept)


def test_explored_column_marks_a_uniform_sample_of_the_audience(tmp_path: Path) -> None:
    spec = load_spec(_policy_spec(tmp_path))
    a = simulate_campaign(spec, N, FLIPPED, seed=7).assignment
    explored = a["explored"].to_numpy()
    assert explored.dtype == bool and explored.mean() == pytest.approx(0.2, abs=0.01)
    rules = np.where(a["segment"].astype(str) == "prospect", "personal", "control")
    assert (a["variant_id"].to_numpy()[~explored] == rules[~explored]).all()  # rules outside
    counts = a.loc[explored, "variant_id"].value_counts(normalize=True)
    assert counts.to_dict() == pytest.approx(dict.fromkeys(counts.index, 1 / 3), abs=0.03)
    plain = simulate_campaign(load_spec(DEMO_SPEC), 500, seed=1).assignment
    assert plain["explored"].all()  # without rules every group was drawn at random


@pytest.mark.integration
def test_loopexp_run_judges_a_policy_iteration_on_its_exploration_share(tmp_path: Path) -> None:
    spec_path = _policy_spec(tmp_path)
    spec = load_spec(spec_path)
    campaign = simulate_campaign(spec, N, FLIPPED, seed=7)
    events, assignment = campaign.write(tmp_path / "d")
    explored = campaign.assignment[campaign.assignment["explored"]]
    results = _run(spec_path, events, assignment, tmp_path / "out", tmp_path / "m.db", (0, 3))
    assert results.decision.status != Status.INVALID_SRM, results.decision.reasons
    assert results.srm.ok and results.srm.expected == pytest.approx(
        dict.fromkeys(results.srm.expected, 1 / 3)
    )
    assert results.srm.observed == explored["variant_id"].value_counts().to_dict()
    assert results.policy_share is not None
    assert results.policy_share.explored == len(explored)
    assert results.policy_share.explored + results.policy_share.policy == N
    assert {v.id: v.n for v in results.variants} == results.srm.observed
    assert any("exploration share only" in r for r in results.decision.reasons)
    assert results.experiment.spec_sha256 == spec.sha256()  # the spec as written, not reweighted
    (kept,) = (tmp_path / "out").glob(f"attempts/*/{POLICY_ARTIFACT}")
    step = PolicyStep.model_validate_json(kept.read_text(encoding="utf-8"))
    assert step.realised is not None and step.realised.n == N  # the policy share: realised gain


@pytest.mark.integration
def test_loopexp_run_still_catches_a_broken_split_inside_the_exploration_share(
    tmp_path: Path,
) -> None:
    spec_path = _policy_spec(tmp_path)
    spec = load_spec(spec_path)
    campaign = simulate_campaign(spec, N, FLIPPED, seed=7)
    events, assignment = campaign.write(tmp_path / "d")
    broken = pd.read_parquet(assignment)
    # A send that lost a fifth of the explored urgency arm (rows gone, their events with them).
    lost = broken["explored"] & (broken["variant_id"] == "urgency")
    lost &= np.arange(len(broken)) % 5 == 0
    broken[~lost].to_parquet(assignment, index=False)
    kept_events = pd.read_parquet(events)
    gone = set(broken.loc[lost, "recipient_key"])
    kept_events[~kept_events["recipient_key"].isin(gone)].to_parquet(events, index=False)
    results = _run(spec_path, events, assignment, tmp_path / "out", tmp_path / "m.db", (4,))
    assert results.decision.status == Status.INVALID_SRM, results.decision.reasons
    assert not results.srm.ok
    assert json.loads(results.to_json())["policy_share"]["policy"] > 0
    assert lx.analyze_files(spec, events, assignment)[1].decision.status == Status.INVALID_SRM
