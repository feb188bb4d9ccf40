"""Planning: the minimum detectable effect against R, and the plan of a spec (plan.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loopexp import TrueEffects, analyze_files, load_spec, simulate_campaign
from loopexp.design.plan import (
    ExperimentPlan,
    mde_at,
    plan_experiment,
    power_at,
    sample_size_per_variant,
)
from loopexp.design.spec import parse_spec
from loopexp.learn.history import baseline_from_history
from tests.conftest import DEMO_SPEC

# Made with R 4.x (stats::power.prop.test; tol tightened from the default eps^0.25, which alone
# moves p2 by ~1e-4):
#   for (n in c(5000, 20000, 60000)) {
#     r <- power.prop.test(n = n, p1 = 0.04, power = 0.8, sig.level = 0.025, tol = 1e-12)
#     cat(n, sprintf("%.10f", r$p2 / 0.04 - 1), "\n")
#   }
#   power.prop.test(n = 50, p1 = 0.5, power = 0.9, sig.level = 0.05, tol = 1e-12)$p2
R_MDE_RELATIVE = {5000: 0.3245146111, 20000: 0.1565764238, 60000: 0.0890373305}
R_P2_N50 = 0.8026305817  # the R documentation example (printed there as 0.8026)


@pytest.mark.parametrize(("n", "expected"), R_MDE_RELATIVE.items())
def test_mde_matches_r_power_prop_test(n: int, expected: float) -> None:
    assert mde_at(0.04, n, alpha=0.025, power=0.8) == pytest.approx(expected, rel=1e-6)


def test_mde_matches_the_r_documentation_example() -> None:
    assert 0.5 * (1 + mde_at(0.5, 50, alpha=0.05, power=0.9)) == pytest.approx(R_P2_N50, abs=1e-7)


def test_mde_inverts_the_sample_size_and_is_none_when_nothing_is_detectable() -> None:
    sizing = sample_size_per_variant(0.04, 0.10, alpha=0.05, power=0.8)
    assert mde_at(0.04, sizing.per_variant, 0.05, 0.8) == pytest.approx(0.10, abs=2e-4)
    assert power_at(0.04, mde_at(0.04, 3000), 3000) == pytest.approx(0.8, abs=1e-6)
    assert mde_at(0.4, 5, 0.05, 0.8) is None  # 5 per arm cannot detect even 40% → 100%


def test_plan_of_the_demo_spec() -> None:
    spec = load_spec(DEMO_SPEC)
    plan = plan_experiment(spec, 0.04, recipients_per_day=20_000, audience_size=60_000)
    sizing = sample_size_per_variant(0.04, 0.10, 0.05, 0.8, n_challengers=2)
    assert plan.per_variant == sizing.per_variant
    assert plan.mailed == plan.total == 3 * sizing.per_variant
    assert plan.days == math.ceil(plan.total / 20_000)
    # 60,000 recipients over three arms detect less than the planned +10%: the MDE is larger.
    assert plan.mde_at_audience == pytest.approx(mde_at(0.04, 20_000, 0.025, 0.8))
    assert plan.mde_at_audience > 0.10


def test_plan_honours_weights_and_holdout() -> None:
    text = DEMO_SPEC.read_text().replace("holdout: 0.0", "holdout: 0.1")
    text = text.replace("  - id: control\n", "  - id: control\n    weight: 2\n")
    spec = parse_spec(text)
    plan = plan_experiment(spec, 0.04)
    # the smallest arm (weight 1 of 4) gets per_variant; control twice that.
    assert plan.mailed == 4 * plan.per_variant
    assert plan.total == math.ceil(plan.mailed / 0.9)
    assert plan.days is None and plan.mde_at_audience is None


def test_plan_json_round_trip(tmp_path: Path) -> None:
    plan = plan_experiment(load_spec(DEMO_SPEC), 0.05, recipients_per_day=10_000)
    path = plan.write_json(tmp_path / "out" / "plan.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == "1" and data["per_variant"] == plan.per_variant
    assert ExperimentPlan.model_validate(data) == plan


def test_baseline_from_history_pools_earlier_controls(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC)
    paths, controls = [], []
    for seed, n in ((1, 3000), (2, 6000)):
        campaign = simulate_campaign(spec, n, TrueEffects(), seed=seed)
        events, assignment = campaign.write(tmp_path / str(seed))
        _, results = analyze_files(spec, events, assignment)
        paths.append(results.write_json(tmp_path / f"results-{seed}.json"))
        controls.append(next(v for v in results.variants if v.is_control).metrics["click_rate"])
    expected = sum(c.numerator for c in controls) / sum(c.denominator for c in controls)
    assert baseline_from_history(spec, paths) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no results"):
        baseline_from_history(spec, [])


def test_cli_plan_writes_the_same_plan_as_python(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loopexp.cli import app

    out = tmp_path / "plan.json"
    args = ["plan", str(DEMO_SPEC), "--baseline", "0.04", "--per-day", "20000"]
    result = CliRunner().invoke(app, [*args, "--audience", "60000", "--json", str(out)])
    assert result.exit_code == 0, result.output
    expected = plan_experiment(load_spec(DEMO_SPEC), 0.04, "as given", 20_000, 60_000)
    assert ExperimentPlan.model_validate_json(out.read_text()) == expected
    words = " ".join(result.output.split())  # the console wraps at 80 columns
    assert "8 day(s) of sending" in words and "+15.7% or more" in words


def test_cli_plan_from_history_and_its_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loopexp.cli import app

    runner = CliRunner()
    history = str(Path(__file__).parent / "data" / "results-history.json")
    ok = runner.invoke(app, ["plan", str(DEMO_SPEC), "--history", history])
    assert ok.exit_code == 0 and "pooled from 1 earlier send" in " ".join(ok.output.split())
    for args, message in (
        (["--baseline", "4"], "e.g. 0.04 for 4%"),
        ([], "--baseline"),
        (["--history", str(tmp_path / "none-*.json")], "matches no file"),
    ):
        result = runner.invoke(app, ["plan", str(DEMO_SPEC), *args])
        assert result.exit_code == 2, result.output
        words = " ".join(result.output.split())
        assert message in words and "Traceback" not in words
