"""What a marketer reads in MLflow (issue #30): a few dozen role-named metrics, the same in every
iteration; the decision, the lift with its interval and the summary as runs-table columns (a saved
view the printed links open); one report run per campaign, updated by each report.

Three iterations are logged through the Python API on a local SQLite store (no notebook kernel):
the run contents are what ``loopexp run`` logs (:func:`loopexp.track.tracking.log_contents`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from loopexp import load_spec, simulate_campaign
from loopexp.analysis.analyze import analyze_files
from loopexp.core import tags as tag
from loopexp.sim.simulate import DEMO_EFFECTS
from loopexp.track.closed_loop import build_report, campaign_subjects, log_report
from loopexp.track.tracking import log_run, resolve_tracking_uri, ui_hint
from loopexp.track.views import VIEW_COLUMNS, VIEW_KEY, VIEW_TAG, experiment_url
from tests.conftest import DEMO_SPEC

#: The issue's bound: a run has a few dozen metrics, not hundreds.
MAX_METRICS = 60


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """Three logged iterations of the demo campaign: (tracking URI, run ids oldest first)."""
    folder = tmp_path_factory.mktemp("marketer")
    uri = resolve_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    base = load_spec(DEMO_SPEC)
    run_ids, parent = [], None
    for iteration in (1, 2, 3):
        spec = base.model_copy(update={"iteration": iteration, "parent_run_id": parent})
        sim = simulate_campaign(spec, 6_000, DEMO_EFFECTS, seed=iteration)
        events, assignment = sim.write(folder / f"iter{iteration}")
        _, results = analyze_files(spec, events, assignment)
        path = results.write_json(folder / f"iter{iteration}" / "results.json")
        parent, _ = log_run(results, spec, [path], uri)
        run_ids.append(parent)
    return uri, run_ids


def test_a_run_has_a_few_dozen_metrics_named_the_same_in_every_iteration(campaign) -> None:
    uri, run_ids = campaign
    client = MlflowClient(uri)
    runs = [client.get_run(r) for r in run_ids]
    keys = [set(run.data.metrics) for run in runs]
    for run, names in zip(runs, keys, strict=True):
        assert 20 <= len(names) <= MAX_METRICS, (run.info.run_name, len(names))
        # Only role names: no metric per variant (those are tables).
        assert all(k.split(".")[0] not in {"personal", "urgency"} for k in names), names
    # Compare view of the three iterations: every metric row has a value in every run.
    assert keys[0] == keys[1] == keys[2]
    assert {"decision.rel_lift", "control.click_rate", "best.click_rate"} <= keys[0]
    artifacts = {a.path for a in client.list_artifacts(run_ids[0], "tables")}
    assert {"tables/variants.json", "tables/comparisons.json"} <= artifacts
    table = client.load_table(
        runs[0].info.experiment_id, "tables/variants.json", run_ids=[run_ids[0]], extra_columns=[]
    )
    assert {"control", "personal", "urgency"} <= set(table["variant"])


def test_the_runs_table_shows_decision_lift_and_summary_columns(campaign) -> None:
    uri, run_ids = campaign
    client = MlflowClient(uri)
    run = client.get_run(run_ids[-1])
    tags = run.data.tags
    assert tags[tag.DECISION_STATUS] in {"ship", "keep_testing", "no_difference"}
    assert tags[tag.SUMMARY].endswith(".")
    lift = tags[tag.LIFT]
    assert lift == "n/a" or ("% CI" in lift and lift[0] in "+-"), lift
    # The saved view the links open shows these as columns.
    experiment = client.get_experiment(run.info.experiment_id)
    view = json.loads(experiment.tags[VIEW_TAG])
    assert view["selectedColumns"] == list(VIEW_COLUMNS)
    assert f"tags.`{tag.LIFT}`" in view["selectedColumns"]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    url = experiment_url("http://127.0.0.1:5000", run.info.experiment_id)
    assert url.endswith(f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")
    assert f"viewStateShareKey={VIEW_KEY}" in ui_hint(uri, run.info.experiment_id)


def test_report_twice_leaves_one_report_run(campaign, tmp_path: Path) -> None:
    uri, run_ids = campaign
    client = MlflowClient(uri)
    experiment_id = client.get_run(run_ids[0]).info.experiment_id
    page = tmp_path / "r.html"
    page.write_text("<p>first</p>", encoding="utf-8")
    first = log_report(build_report("spring-newsletter", uri, tmp_path / "a"), page)
    page.write_text("<p>second</p>", encoding="utf-8")
    second = log_report(build_report("spring-newsletter", uri, tmp_path / "b"), tmp_path / "r.html")
    reports = [
        r for r in client.search_runs([experiment_id]) if r.data.tags.get(tag.KIND) == "report"
    ]
    assert first == second and len(reports) == 1
    (report,) = reports
    assert report.info.status == "FINISHED"
    assert report.data.tags[tag.REPORT_ITERATIONS] == "3"
    assert report.data.tags[tag.PARENT_RUN_ID] == run_ids[-1]
    # The artifact is the latest page, replaced in place.
    local = client.download_artifacts(second, "report/r.html", str(tmp_path / "dl"))
    assert Path(local).read_text(encoding="utf-8") == "<p>second</p>"
    # The report puts each subject line beside its variant id (from the runs' params).
    subjects = campaign_subjects("spring-newsletter", uri)
    assert sorted(subjects) == [1, 2, 3]
    assert subjects[1]["personal"].startswith("{first_name}")
