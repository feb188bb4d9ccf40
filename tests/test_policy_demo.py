"""``loopexp demo --iterations 3`` on the personalised-subject campaign (issue 27): iteration 1
learns a per-segment policy from a send whose best subject flips by segment, iterations 2 and 3
deploy it, and the projected vs realised gain is printed, in the closed-loop report and in
MLflow."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.core import tags as tag
from loopexp.design.policy import PolicySettings
from loopexp.design.spec import load_spec
from loopexp.learn.policy.step import POLICY_ARTIFACT, Gain, PolicyStep, _incumbent_stays
from loopexp.track.closed_loop import campaign_runs
from tests.conftest import ROOT

runner = CliRunner()
SPEC = ROOT / "experiments" / "personalised_subject.yaml"


@pytest.mark.integration
def test_demo_learns_deploys_and_realises_a_policy(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "demo"
    args = ["demo", "--iterations", "3", "--spec", str(SPEC), "--recipients", "24000"]
    result = runner.invoke(app, [*args, "--out", str(out), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    steps = {
        it: PolicyStep.model_validate_json(
            Path(
                glob.glob(str(out / f"analysis/iter{it}/attempts/*/{POLICY_ARTIFACT}"))[0]
            ).read_text(encoding="utf-8")
        )
        for it in (1, 2, 3)
    }
    learned = steps[1].next_policy
    assert learned.deployed and learned.kind == "segment"
    assert any(
        w.startswith("prospect") or w.endswith("→ variant personal") for w in learned.words()
    )
    assert learned.projected_gain_ci is not None and learned.projected_gain_ci[0] > 0
    deployed = load_spec(out / "experiments" / "autumn-offers-iter3.yaml").policy
    assert deployed is not None and deployed.deployed  # iteration 3 still sends by rules
    for it in (2, 3):
        step = steps[it]
        assert step.projected is not None and step.realised is not None
        assert step.realised.value > 0, step.line()  # a real gain on a send the rules chose
        assert f"iteration {it}: personalisation gain: projected +" in result.output
        results = (out / "analysis" / f"iter{it}" / "attempts").glob("*/results.json")
        assert '"policy_share"' in next(results).read_text(encoding="utf-8")
    page = (out / "closed_loop_report.html").read_text(encoding="utf-8")
    assert "Iteration 3: personalisation gain: projected +" in page
    runs = {int(r.data.tags[tag.ITERATION]): r for r in campaign_runs("autumn-offers", uri)}
    logged = runs[3].data.metrics
    assert logged["policy_gain_realised"] == pytest.approx(steps[3].realised.value)
    assert logged["policy_gain_projected"] == pytest.approx(steps[3].projected.value)
    assert "policy_gain_realised" not in runs[1].data.metrics  # nothing deployed in iteration 1


def test_deployed_rules_stay_unless_their_realised_gain_is_shown_negative() -> None:
    rules = PolicySettings.model_validate(
        {"rules": [{"when": [{"feature": "segment", "op": "==", "value": "prospect"}],
                    "action": "personal"}, {"action": "control"}]}
    )  # fmt: skip
    unclear = Gain(value=0.002, ci_low=-0.004, ci_high=0.008, n=1000, method="x")
    loss = Gain(value=-0.01, ci_low=-0.016, ci_high=-0.004, n=1000, method="x")
    assert _incumbent_stays(rules, unclear)
    assert not _incumbent_stays(rules, loss)  # a loss shown on the send: the rules go
    assert not _incumbent_stays(PolicySettings(), None)  # nothing deployed: nothing to keep
