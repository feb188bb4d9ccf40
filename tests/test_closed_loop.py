"""The closed loop over many iterations: the hands-off demo, the report read back from MLflow.

The demo test runs the real pipeline three times (papermill, DuckDB, a real ``mlflow server``) on
a simulated campaign whose truth changes between iterations, and checks that the decisions follow
the truth, the lineage holds in MLflow, the send-time windows flow into the next spec, and the
report (read back through the MLflow API) shows the climb.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from statsmodels.stats.meta_analysis import combine_effects
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.design.spec import load_spec
from loopexp.learn.history import ClosedLoopReport, IterationRecord
from loopexp.learn.shrinkage import Lift, empirical_bayes_prior, shrink
from loopexp.report.closed_loop import links_frame, report_html
from loopexp.sim.demo import DEMO_BEST_SLOTS, EXPECTED_DECISIONS, run_demo_loop
from loopexp.track.closed_loop import ReportError, build_report, campaign_runs

DEMO_RECIPIENTS = 30_000


def test_empirical_bayes_prior_matches_statsmodels_dersimonian_laird() -> None:
    y = np.array([0.15, 0.01, -0.07, 0.23, -0.12, -0.05])
    se = np.array([0.08, 0.07, 0.06, 0.06, 0.05, 0.05])
    reference = combine_effects(y, se**2, method_re="dl")
    mean, sd = empirical_bayes_prior(list(zip(y, se, strict=True)))
    assert mean == pytest.approx(reference.mean_effect_re, rel=1e-9)
    assert sd**2 == pytest.approx(reference.tau2, rel=1e-9)
    assert empirical_bayes_prior([(0.1, 0.05), (0.2, 0.05)]) is None  # too few to learn from


def test_shrinkage_pulls_the_winner_toward_the_prior_mean() -> None:
    y, se = math.log1p(0.30), 0.08
    shrunk = shrink(y, se, (0.0, 0.10))
    assert 0 < shrunk.value < 0.30
    # B = tau² / (tau² + se²) = 0.01 / 0.0164
    assert math.log1p(shrunk.value) == pytest.approx(y * 0.01 / 0.0164)
    assert shrunk.high - shrunk.low < 2 * 1.96 * se * 1.4  # narrower than the raw interval
    assert shrink(y, se, (0.02, 0.0)).value == pytest.approx(math.expm1(0.02))  # no spread


def test_report_html_escapes_everything_from_specs_and_data() -> None:
    evil = "<script>alert(1)</script>"
    record = IterationRecord(
        run_id="r1",
        parent_run_id=None,
        lineage_ok=True,
        iteration=1,
        name=evil,
        test_type="subject_line",
        control=evil,
        status="ship",
        winner=evil,
        best_challenger=evil,
        primary_metric="click_rate",
        lift=Lift(value=0.1, low=0.01, high=0.2, level=0.95),
        kpis={"click_rate": 0.05},
        control_kpis={"click_rate": 0.045},
        recipients=10,
        next_spec=f"none: {evil}",
        send_windows={evil: evil},
        vetoed=[evil],
        link_clicks={evil: {evil: 1.0}},
    )
    report = ClosedLoopReport(
        campaign=evil,
        tracking_uri=evil,
        iterations=[record],
        prior_mean=None,
        prior_sd=None,
        prior_tests=0,
        shrunk=[],
        cumulative=Lift(value=None),
        cumulative_shrunk=Lift(value=None),
        next_steps=[evil],
        notes=[evil],
    )
    page = report_html(report, plot=False)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str):
    out = tmp_path_factory.mktemp("closed-loop-demo")
    return run_demo_loop(out, 3, DEMO_RECIPIENTS, seed=7, tracking_uri=mlflow_server)


@pytest.mark.integration
def test_three_iterations_follow_the_simulated_truth(demo) -> None:
    assert len(demo.iterations) == 3
    got = [
        (it.outcome.results.decision.status.value, it.outcome.results.decision.winner)
        for it in demo.iterations
    ]
    for (status, winner), (want_status, want_winner) in zip(got, EXPECTED_DECISIONS, strict=True):
        if want_status is None:  # iteration 3: nothing is really better than the control
            assert status != "ship", got
        else:
            assert (status, winner) == (want_status, want_winner), got
    # the two challengers that really harm unsubscribes are vetoed by the guardrail
    vetoed = [
        {g.variant for g in it.outcome.results.decision.guardrails if not g.passed}
        for it in demo.iterations
    ]
    assert "urgency" in vetoed[0] and "story" in vetoed[2]
    # each spec comes from the previous decision, with its run as parent
    second = load_spec(demo.iterations[1].spec_path)
    third = load_spec(demo.iterations[2].spec_path)
    assert (
        second.control == "personal" and second.parent_run_id == demo.iterations[0].outcome.run_id
    )
    assert third.control == "benefit" and third.parent_run_id == demo.iterations[1].outcome.run_id
    # the send-time recommendation flows into the next spec: each segment at its true best slot
    assert second.send_time is not None and second.send_time.windows == DEMO_BEST_SLOTS
    assert second.send_time.explore_share == pytest.approx(0.1)
    # the backlog ran dry: no fourth spec, and the note says so (not an error)
    assert demo.iterations[2].next_spec_path is None
    assert "backlog" in demo.iterations[2].next_spec_note


@pytest.mark.integration
def test_report_read_back_from_mlflow_shows_the_climb(demo, mlflow_server: str) -> None:
    report = build_report("weekly-offers", mlflow_server)
    assert [r.iteration for r in report.iterations] == [1, 2, 3]
    assert all(r.lineage_ok for r in report.iterations)
    clicks = [r.kpis["click_rate"] for r in report.iterations]
    assert clicks[0] < clicks[1] < clicks[2] * 1.05  # the climb (iteration 3 holds the level)
    assert all(set(r.kpis) >= {"delivery_rate", "unsubscribe_rate"} for r in report.iterations)
    # cumulative lift of the control over the first: two shipped winners, interval above 0
    assert report.cumulative.low > 0 and report.cumulative.value > 0.5
    # winner's curse: shipped winners' shrunk lifts sit below their raw lifts
    shipped = [s for s in report.shrunk if s.shipped]
    assert len(shipped) == 2
    assert report.prior_tests == 6
    assert all(s.shrunk.value <= s.raw.value for s in shipped)
    assert report.iterations[0].send_windows == DEMO_BEST_SLOTS
    assert any("backlog ran dry" in step for step in report.next_steps)
    # the per-link click distribution, read back from each run's results: the hardly-clicked
    # link (the simulator sends 10 % of human clicks to /account) is named in what to test next
    assert all(r.link_clicks for r in report.iterations)
    assert not any("per-link" in note for note in report.notes)
    last = report.iterations[-1]
    shipped_or_control = last.winner if last.status == "ship" and last.winner else last.control
    shares = last.link_clicks[shipped_or_control]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert min(shares, key=shares.get) == "https://shop.example/account"
    assert any("https://shop.example/account drew only" in s for s in report.next_steps)
    assert links_frame(report).index[-1] == "https://shop.example/account"
    # incremental revenue against the 10 % no-mail holdout, with its interval (issue 15's table)
    incremental = [r.incremental_revenue for r in report.iterations]
    assert all(i is not None and i.low is not None for i in incremental)
    assert all(i.low < i.total < i.high for i in incremental)
    assert all(i.total > 0 for i in incremental) and any(i.low > 0 for i in incremental)
    assert "added over the no-mail holdout" in demo.report_path.read_text(encoding="utf-8")
    # logged as an artifact of a report run in the campaign's experiment, which is no iteration
    client = MlflowClient(mlflow_server)
    run = client.get_run(demo.report_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["loopexp.kind"] == "report"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} >= {
        "report/closed_loop_report.html"
    }
    assert len(campaign_runs("weekly-offers", mlflow_server)) == 3
    page = demo.report_path.read_text(encoding="utf-8")
    assert "Cumulative lift" in page and "What to test next" in page
    assert "Link click distribution" in page and "https://shop.example/account" in page


@pytest.mark.integration
def test_report_command_writes_and_logs(demo, mlflow_server: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        ["report", "--campaign", "weekly-offers", "--tracking-uri", mlflow_server, "--out", out],
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and "3 iteration(s)" in result.output and "Report run:" in result.output
    missing = CliRunner().invoke(
        app, ["report", "--campaign", "no-such", "--tracking-uri", mlflow_server]
    )
    assert missing.exit_code == 2 and "no analysed iteration" in missing.output


def test_report_of_an_unknown_campaign_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no analysed iteration"):
        build_report("nothing-here", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.integration
def test_closed_loop_notebook_reads_the_campaign_back(
    demo, mlflow_server: str, tmp_path: Path
) -> None:
    import json

    import nbformat

    from loopexp.run.notebook import execute
    from tests.conftest import ROOT

    result = tmp_path / "report.json"
    executed = execute(
        ROOT / "notebooks" / "closed_loop_report.ipynb",
        tmp_path / "closed_loop_report.ipynb",
        {
            "campaign": "weekly-offers",
            "tracking_uri": mlflow_server,
            "result_path": str(result),
            "html_path": str(tmp_path / "report.html"),
        },
        cwd=tmp_path,
    )
    report = json.loads(result.read_text())
    assert [r["iteration"] for r in report["iterations"]] == [1, 2, 3]
    assert report["cumulative"]["value"] > 0
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert "Cumulative lift over iteration 1" in "".join(o.get("text", "") for o in outputs)


@pytest.mark.integration
def test_demo_command_runs_iterations_hands_off_with_adaptive_weights(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--iterations",
            "2",
            "--adaptive",
            "--recipients",
            "20000",
            "--out",
            str(tmp_path / "demo"),
            "--tracking-uri",
            uri,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "The loop, iteration by iteration" in result.output
    assert "Closed-loop report:" in result.output and "Report run:" in result.output
    third = load_spec(tmp_path / "demo" / "experiments" / "weekly-offers-iter3.yaml")
    shares = third.expected_shares()
    mailed = 1 - third.audience.holdout
    assert shares[third.control] == pytest.approx(mailed / 3)  # the control's share stays fixed
    assert min(shares.values()) >= 0.05 - 1e-9  # the floor holds
    assert (tmp_path / "demo" / "closed_loop_report.html").exists()


def test_links_frame_without_link_data_is_empty() -> None:
    report = ClosedLoopReport(
        campaign="c",
        tracking_uri="u",
        iterations=[],
        prior_mean=None,
        prior_sd=None,
        prior_tests=0,
        shrunk=[],
        cumulative=Lift(value=None),
        cumulative_shrunk=Lift(value=None),
        next_steps=[],
        notes=[],
    )
    assert links_frame(report).empty
