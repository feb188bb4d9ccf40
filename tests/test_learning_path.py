"""One learning path (#23): a scheduled ``loopexp run`` carries into the next spec what it learned.

The demo used to rewrite the next spec ``run_iteration`` wrote; a scheduled run wrote the plain
one, so the learned send windows, the shrunk planning baseline and the adaptive weights never
reached production. Here the same simulated campaign goes once through ``loopexp demo``'s loop
and once through the CLI as a scheduler calls it (``loopexp run``, twice): the next specs must
carry what was learned, and be the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopexp.analysis.results import ExperimentResults
from loopexp.cli import app
from loopexp.design.parts import AllocationSettings
from loopexp.design.plan import plan_for
from loopexp.design.resources import example_spec_path
from loopexp.design.spec import ExperimentSpec, load_spec, write_spec
from loopexp.learn.allocation import thompson_weights
from loopexp.learn.shrinkage import planning_baseline
from loopexp.sim.demo import CLOSED_LOOP_SPEC, DEMO_BEST_SLOTS, DEMO_TRUTHS, run_demo_loop
from loopexp.sim.simulate import simulate_campaign

pytestmark = pytest.mark.integration

RECIPIENTS = 20_000
SEED = 7
ITERATIONS = 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's experiments folder after two adaptive iterations."""
    root = tmp_path_factory.mktemp("demo")
    run_demo_loop(
        root / "demo",
        iterations=ITERATIONS,
        recipients=RECIPIENTS,
        seed=SEED,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        adaptive=True,
    )
    return root / "demo" / "experiments"


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same campaign run by a scheduler: ``loopexp run`` on each iteration's spec and data."""
    root = tmp_path_factory.mktemp("scheduled")
    spec = load_spec(example_spec_path(CLOSED_LOOP_SPEC))
    path = write_spec(
        spec.model_copy(update={"allocation": AllocationSettings()}),
        root / "experiments" / CLOSED_LOOP_SPEC,
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for i in range(ITERATIONS):
        spec = load_spec(path)
        campaign = simulate_campaign(spec, RECIPIENTS, DEMO_TRUTHS[i], seed=SEED + i)
        events, assignment = campaign.write(root / "data" / f"iter{spec.iteration}")
        result = CliRunner().invoke(
            app,
            ["run", str(path), "--events", str(events), "--assignment", str(assignment),
             "--out", str(root / "runs" / f"iter{spec.iteration}"), "--tracking-uri", uri],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        path = path.parent / f"{spec.campaign}-iter{spec.iteration + 1}.yaml"
        assert path.exists(), result.output
    return root


def _spec(root: Path, iteration: int) -> ExperimentSpec:
    name = CLOSED_LOOP_SPEC if iteration == 1 else f"weekly-offers-iter{iteration}.yaml"
    return load_spec(root / "experiments" / name)


def _results(root: Path, iteration: int) -> ExperimentResults:
    return ExperimentResults.read_json(root / "runs" / f"iter{iteration}" / "results.json")


def test_scheduled_run_writes_the_learned_send_windows(scheduled: Path) -> None:
    second = _spec(scheduled, 2)
    assert second.send_time is not None
    assert second.send_time.windows == DEMO_BEST_SLOTS
    assert second.send_time.explore_share == pytest.approx(0.1)
    assert (scheduled / "runs" / "iter1" / "send_time.json").exists()


def test_scheduled_run_writes_the_adaptive_weights(scheduled: Path) -> None:
    first, second = _spec(scheduled, 1), _spec(scheduled, 2)
    arms = [v.id for v in second.variants]
    expected = thompson_weights(first, _results(scheduled, 1), arms, second.control)
    assert {v.id: v.weight for v in second.variants} == pytest.approx(expected)
    shares = second.expected_shares()
    assert shares[second.control] == pytest.approx((1 - second.audience.holdout) / 3)


def test_scheduled_run_plans_from_the_shrunk_baseline(scheduled: Path) -> None:
    history = [_results(scheduled, 1), _results(scheduled, 2)]
    assert history[-1].decision.status.value == "ship"
    baseline = planning_baseline(history)
    assert baseline is not None
    third = _spec(scheduled, 3)
    assert third.planned_recipients_per_variant == plan_for(third, baseline).per_variant
    winner = next(v for v in history[-1].variants if v.id == history[-1].decision.winner)
    observed = winner.metrics[third.primary_metric].value
    assert plan_for(third, observed).per_variant != third.planned_recipients_per_variant


def test_demo_and_scheduled_run_write_the_same_next_specs(demo: Path, scheduled: Path) -> None:
    for iteration in range(2, ITERATIONS + 2):
        from_demo = load_spec(demo / f"weekly-offers-iter{iteration}.yaml")
        from_run = _spec(scheduled, iteration)
        assert from_demo.model_dump(exclude={"parent_run_id"}) == from_run.model_dump(
            exclude={"parent_run_id"}
        )
        assert from_demo.send_time is not None and from_demo.send_time.windows == DEMO_BEST_SLOTS
