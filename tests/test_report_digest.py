"""Speed on a shared store (issue #25): the report from one search, logging in few requests.

Each analysed run carries its iteration's digest as a tag, so the report of a long campaign reads
no artifact: with every artifact of the store moved away the report is the same as the one read
from the runs' ``results.json`` files (the fallback for runs logged before the digest). One
iteration's logging to a real ``mlflow server`` is counted request by request, and the runs read
back through the REST API (no MLflow client) equal what MLflow's client reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from loopexp import load_spec, simulate_campaign
from loopexp.analysis.analyze import analyze_files
from loopexp.analysis.results import ExperimentResults
from loopexp.core import tags as tag
from loopexp.sim.simulate import DEMO_EFFECTS
from loopexp.track import digest as digest_module
from loopexp.track.closed_loop import ReportError, build_report, campaign_runs
from loopexp.track.digest import digest_tags, read_digest
from loopexp.track.tracking import log_run, resolve_tracking_uri
from tests.conftest import DEMO_SPEC


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[ExperimentResults]]:
    """Three iterations logged through the Python API: (URI, artifact folder, results)."""
    folder = tmp_path_factory.mktemp("digest")
    uri = resolve_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    base = load_spec(DEMO_SPEC)
    parent, all_results = None, []
    for iteration in (1, 2, 3):
        spec = base.model_copy(update={"iteration": iteration, "parent_run_id": parent})
        sim = simulate_campaign(spec, 4_000, DEMO_EFFECTS, seed=10 + iteration)
        events, assignment = sim.write(folder / f"iter{iteration}")
        _, results = analyze_files(spec, events, assignment)
        path = results.write_json(folder / f"iter{iteration}" / "results.json")
        parent, _ = log_run(results, spec, [path], uri)
        all_results.append(results)
    return uri, folder / "mlartifacts", all_results


def test_report_reads_no_artifact_and_equals_the_one_read_from_files(logged, tmp_path) -> None:
    uri, artifacts, _ = logged
    campaign = load_spec(DEMO_SPEC).campaign
    runs = campaign_runs(campaign, uri)
    assert len(runs) == 3 and all(read_digest(r.data.tags) for r in runs)

    aside = tmp_path / "aside"
    shutil.move(artifacts, aside)  # no run has a file now: only the tags can answer
    try:
        from_tags = build_report(campaign, uri, tmp_path / "a")
    finally:
        shutil.move(aside, artifacts)
    assert not any((tmp_path / "a").rglob("*.json"))  # nothing was downloaded

    client = MlflowClient(tracking_uri=uri)
    client.delete_tag(runs[0].info.run_id, tag.DIGEST)  # an old run: read from its files
    mixed = build_report(campaign, uri, tmp_path / "b")
    for run in runs[1:]:
        client.delete_tag(run.info.run_id, tag.DIGEST)
    from_files = build_report(campaign, uri, tmp_path / "c")
    try:
        assert len(list((tmp_path / "c").rglob("results.json"))) == 3
        assert from_tags.model_dump() == from_files.model_dump() == mixed.model_dump()
        assert len(from_tags.iterations) == 3 and from_tags.prior_tests >= 3

        shutil.move(artifacts, aside)  # no digest and no file: no evidence, a clear error
        with pytest.raises(ReportError, match=r"no run has a results\.json"):
            build_report(campaign, uri, tmp_path / "d")
    finally:
        if aside.exists():
            shutil.move(aside, artifacts)
        for run, results in zip(runs, logged[2], strict=True):
            for key, value in digest_tags(results).items():
                client.set_tag(run.info.run_id, key, value)


def test_a_digest_too_big_for_a_tag_is_left_out(logged, monkeypatch) -> None:
    results = logged[2][0]
    text = digest_tags(results)[tag.DIGEST]
    assert read_digest({tag.DIGEST: text}) is not None
    assert read_digest({tag.DIGEST: text.replace('"version":1', '"version":99')}) is None
    assert read_digest({tag.DIGEST: "{not json"}) is None
    monkeypatch.setattr(digest_module, "TAG_VALUE_LIMIT", len(text) - 1)
    assert digest_tags(results) == {}  # the report reads this run's files instead


def test_batches_cover_everything_within_mlflow_limits() -> None:
    from loopexp.track.tracking import BATCH_LIMITS, BATCH_TOTAL, _batches

    batches = list(_batches(list(range(150)), list(range(1950)), list(range(3))))
    for key, limit in BATCH_LIMITS.items():
        assert all(len(b[key]) <= limit for b in batches)
    assert all(sum(map(len, b.values())) <= BATCH_TOTAL for b in batches)
    assert [x for b in batches for x in b["params"]] == list(range(150))
    assert [x for b in batches for x in b["metrics"]] == list(range(1950))
    assert len(batches) == 3 and list(_batches([], [], [])) == []


def _counting(monkeypatch) -> list[str]:
    """Every HTTP request MLflow's client sends from now on, as "METHOD /path"."""
    import requests

    seen: list[str] = []
    original = requests.Session.send

    def send(self, request, **kwargs):
        seen.append(f"{request.method} {request.url.split('?')[0].split('/api/')[-1]}")
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    return seen


def test_one_iteration_logs_to_a_server_in_few_requests_and_reads_back_without_mlflow(
    logged, mlflow_server: str, monkeypatch, tmp_path: Path
) -> None:
    from loopexp.track import rest

    spec = load_spec(DEMO_SPEC).model_copy(update={"campaign": "digest-requests"})
    results = logged[2][0]
    path = results.write_json(tmp_path / "results.json")
    log_run(results, spec, [path], mlflow_server)  # the experiment exists from now on
    seen = _counting(monkeypatch)
    run_id, _ = log_run(results, spec, [path], mlflow_server)
    monkeypatch.undo()
    # create, one batch (params, metrics, the tables' tag), the tables folder (one upload each),
    # results.json, terminate: log_table's list / get-run / set-tag per table are gone
    assert not [s for s in seen if "artifacts/list" in s or "set-tag" in s], seen
    assert sum("runs/get" in s for s in seen) <= 1, seen  # the run's artifact location, once
    assert sum("log-batch" in s for s in seen) == 1, seen
    assert len(seen) <= 10, seen

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.get_experiment_by_name("digest-requests").experiment_id
    expected = {r.info.run_id: r for r in client.search_runs([experiment_id])}
    got = rest.list_runs("digest-requests", mlflow_server)
    assert [r.info.run_id for r in got][-1] == run_id and len(got) == len(expected) == 2
    for run in got:
        mine = expected[run.info.run_id]
        assert run.data.tags == mine.data.tags and run.data.params == mine.data.params
        assert run.data.metrics == pytest.approx(mine.data.metrics)
        assert (run.info.status, run.info.start_time) == (mine.info.status, mine.info.start_time)
    assert rest.list_runs("no-such-campaign", mlflow_server) == []
    table = client.load_table(
        got[0].info.experiment_id, "tables/variants.json", run_ids=[run_id], extra_columns=[]
    )
    assert len(table) == len(results.variants)  # MLflow reads the tables as log_table wrote them


def test_runs_on_a_server_imports_no_mlflow(logged, mlflow_server: str, tmp_path: Path) -> None:
    """``loopexp runs`` on a server answers through REST: MLflow's 2–3 s import is not paid."""
    spec = load_spec(DEMO_SPEC).model_copy(update={"campaign": "digest-cli"})
    log_run(logged[2][0], spec, [], mlflow_server)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from loopexp.cli import app\n"
        f"r = CliRunner().invoke(app, ['runs', '--campaign', 'digest-cli', '--last', '1',"
        f" '--tracking-uri', {mlflow_server!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'the latest 1 run' in r.output, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'pandas')))\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_the_trend_of_a_long_campaign_has_a_few_ticks_not_one_per_iteration(logged) -> None:
    from loopexp.learn.history import assemble_report, iteration_record, primary_lifts
    from loopexp.report.closed_loop import MAX_TICKS, trend_plot

    results = logged[2][0]
    records = [
        iteration_record(results, run_id=f"r{i}", parent_run_id=None, previous_run_id=None)
        for i in range(1, 41)
    ]
    records = [r.model_copy(update={"iteration": i}) for i, r in enumerate(records, 1)]
    report = assemble_report("long", "sqlite://", records, [primary_lifts(results)] * 40)
    figure = trend_plot(report)
    clicks = next(ax for ax in figure.axes if ax.get_title() == "human click")
    ticks = [t for t in clicks.get_xticks() if 1 <= t <= 40]  # within the iterations drawn
    assert 2 <= len(ticks) <= MAX_TICKS + 2 and all(float(t).is_integer() for t in ticks)
    short = trend_plot(assemble_report("short", "sqlite://", records[:5], [[]] * 5))
    assert list(short.axes[0].get_xticks()) == [1, 2, 3, 4, 5]  # one per iteration
