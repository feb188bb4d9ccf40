"""The closed-loop report from one search of the store (issue #25, speed on the team store).

Each analysed run carries its iteration's digest as a tag, so the report of a long campaign reads
no artifact: with every artifact of the store moved away the report is the same as the one read
from the runs' ``results.json`` files (the fallback for runs logged before the digest).
"""

from __future__ import annotations

import shutil
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
