"""The policy in the loop (issue 27): learned by ``loopexp run``, carried by the next spec,
applied by ``assign``, and its realised gain measured against the projection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import loopexp as lx
from loopexp.cli import app
from loopexp.design.spec import load_spec, parse_spec
from loopexp.learn.history import closed_loop_report, iteration_record
from loopexp.learn.iteration import Learned, next_iteration
from loopexp.learn.policy.step import POLICY_ARTIFACT, PolicyStep, policy_step
from loopexp.report.closed_loop import write_html
from loopexp.sim.simulate import TrueEffects, simulate_campaign
from tests.conftest import DEMO_SPEC

runner = CliRunner()
FLIPPED = TrueEffects(
    segment_click={
        "prospect": {"personal": 3.0},
        "existing_customer": {"personal": 0.5, "urgency": 0.5},
    }
)


def _learning_spec() -> str:
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["policy"] = {"exploration": 0.2}  # learn a policy from this send
    return yaml.safe_dump(data, sort_keys=False)


def test_policy_learned_deployed_and_its_gain_realised(tmp_path: Path) -> None:
    spec = parse_spec(_learning_spec(), "learn.yaml")
    assert spec.policy is not None and not spec.policy.deployed
    first = simulate_campaign(spec, 24_000, FLIPPED, seed=4)
    events, assignment = first.write(tmp_path / "iter1")
    step = policy_step(spec, events, assignment)
    assert step is not None and step.realised is None
    assert step.next_policy.kind == "segment"
    assert "prospect → variant personal" in step.next_policy.words()
    assert step.next_policy.projected_gain is not None and step.next_policy.projected_gain > 0
    _, results = lx.analyze_files(spec, events, assignment)
    nxt = next_iteration(spec, results, Learned(policy=step.next_policy))
    assert nxt.iteration == 2 and nxt.salt != spec.salt
    assert [v.id for v in nxt.variants] == [v.id for v in spec.variants]
    assert nxt.policy is not None and nxt.policy.deployed and nxt.policy.exploration == 0.2
    # Iteration 2: assign applies the rules (80 % follow them), the send realises the gain.
    second = simulate_campaign(nxt, 24_000, FLIPPED, seed=5)
    share = second.assignment["propensity"].max()
    assert share == pytest.approx(0.8 + 0.2 / 3)
    events2, assignment2 = second.write(tmp_path / "iter2")
    step2 = policy_step(nxt, events2, assignment2)
    assert step2 is not None and step2.realised is not None and step2.projected is not None
    assert step2.realised.ci_low > 0, step2.line()  # a real gain, found on the new send
    assert step2.line().startswith("personalisation gain: projected +")
    assert "realised +" in step2.line()
    # The closed-loop report shows it for the iteration (read from policy.json, as from MLflow).
    _, results2 = lx.analyze_files(nxt, events2, assignment2)
    record = iteration_record(
        results2,
        run_id="run-2",
        parent_run_id=None,
        previous_run_id=None,
        policy=json.loads(step2.model_dump_json()),
    )
    assert record.policy_gain == step2.line()
    report = closed_loop_report(spec.campaign, "sqlite://", [record], [results2])
    page = write_html(report, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Iteration 2: personalisation gain: projected +" in page


def test_a_spec_without_policy_has_no_policy_step(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 2_000, seed=1)
    events, assignment = campaign.write(tmp_path)
    assert policy_step(spec, events, assignment) is None


@pytest.mark.integration
def test_loopexp_run_learns_the_policy_into_the_next_spec(tmp_path: Path) -> None:
    spec_path = tmp_path / "policy-demo.yaml"
    spec_path.write_text(_learning_spec(), encoding="utf-8")
    spec = load_spec(spec_path)
    events, assignment = simulate_campaign(spec, 24_000, FLIPPED, seed=4).write(tmp_path / "d")
    out = tmp_path / "out"
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
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert result.exit_code in (0, 3), result.output
    kept = list(out.glob(f"attempts/*/{POLICY_ARTIFACT}"))
    assert len(kept) == 1
    step = PolicyStep.model_validate_json(kept[0].read_text(encoding="utf-8"))
    assert step.next_policy.kind == "segment"
    nxt = load_spec(tmp_path / f"{spec.campaign}-iter2.yaml")
    assert nxt.policy is not None and nxt.policy.deployed
    assert nxt.policy.words() == step.next_policy.words()
    shutil.rmtree(out, ignore_errors=True)
