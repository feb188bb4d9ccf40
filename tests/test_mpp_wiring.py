"""The opens section wired into analyze_files, results.json and report.html (issue 28, MPP)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import ExperimentResults
from loopexp.core.errors import InputError
from loopexp.run.outputs import write_html_report
from loopexp.run.pipeline import run_iteration
from loopexp.sim.simulate import DEMO_EFFECTS
from tests.conftest import DEMO_SPEC

SENT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def send(tmp_path_factory: pytest.TempPathFactory):
    """The demo send, and as history the same recipients' events of a send 30 days earlier."""
    spec = load_spec(DEMO_SPEC)
    folder = tmp_path_factory.mktemp("mpp")
    events, assignment = simulate_campaign(spec, 6_000, DEMO_EFFECTS, seed=3, send_at=SENT).write(
        folder / "send"
    )
    # an earlier campaign to the same list: this send's events moved 30 days back (new event ids)
    earlier = pd.read_parquet(events)
    earlier["ts"] = earlier["ts"] - pd.Timedelta(days=30)
    earlier["event_id"] = "h-" + earlier["event_id"].astype(str)
    keys = earlier["recipient_key"].unique()  # shuffled: past behaviour independent of this send's
    shuffled = dict(zip(keys, np.random.default_rng(5).permutation(keys), strict=True))
    earlier["recipient_key"] = earlier["recipient_key"].map(shuffled)
    (folder / "history").mkdir()
    history = folder / "history" / "events.parquet"
    earlier.to_parquet(history)
    return spec, folder, Path(events), Path(assignment), Path(history)


def test_analyze_files_fills_the_opens_section_from_the_spec_history(send, tmp_path) -> None:
    spec, folder, events, assignment, history = send
    plain = analyze_files(spec, events, assignment, as_of=SENT + timedelta(days=8))[1]
    assert plain.opens is None  # no history named: no section, and the fingerprint is unchanged
    with_history = spec.model_copy(
        update={"data": spec.data.model_copy(update={"history": f"history/{history.name}"})}
    )
    assert spec.sha256() != with_history.sha256()
    _, res = analyze_files(
        with_history,
        events,
        assignment,
        as_of=SENT + timedelta(days=8),
        spec_path=folder / "spec.yaml",
    )
    missing = spec.model_copy(update={"data": spec.data.model_copy(update={"history": "no.pq"})})
    with pytest.raises(InputError, match=r"data.history 'no.pq'"):
        analyze_files(missing, events, assignment, spec_path=folder / "spec.yaml")
    opens = res.opens
    assert opens is not None and opens["control"] == spec.control
    shares = pd.read_parquet(history)
    assert shares["is_machine_open"].any()  # the simulated history has proxy readers
    mix = opens["reader_share"][spec.control]
    assert mix["proxy"] > 0.05 and mix["non_proxy"] > 0.05 and mix["unknown"] > 0.05
    for c in opens["challengers"]:
        np_ = c["non_proxy"]
        assert np_["rel_ci_low"] <= np_["rel_lift"] <= np_["rel_ci_high"] and np_["n"] > 0
        assert c["bounds"]["diff_low"] < c["bounds"]["diff_high"]
    assert all(0 < s < 1 for s in opens["machine_open_share"].values())
    assert opens["machine_share_jump"] is None  # the earlier send had the same machine share
    path = tmp_path / "results.json"
    res.write_json(path)
    assert ExperimentResults.read_json(path).opens == opens  # schema "1" round trip
    page = write_html_report(res, tmp_path / "report.html").read_text()
    assert "Opens after Apple Mail Privacy Protection" in page
    assert "Among readers whose opens we can see" in page


@pytest.mark.integration
def test_loopexp_run_writes_the_opens_section(send, tmp_path: Path) -> None:
    """The scheduled path: a spec naming its event history gets the opens section and words."""
    _, _, events, assignment, history = send
    spec_path = tmp_path / DEMO_SPEC.name
    spec_path.write_text(
        DEMO_SPEC.read_text() + f"data:\n  history: {os.path.relpath(history, tmp_path)}\n"
    )
    # the repository's notebook (an editable install elsewhere may map loopexp.notebooks away)
    notebook = Path(__file__).parents[1] / "notebooks" / "analyze_experiment.ipynb"
    outcome = run_iteration(
        spec_path,
        events,
        assignment,
        tmp_path / "out",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        notebook=notebook,
    )
    results = ExperimentResults.read_json(outcome.results_path)
    assert results.opens is not None and results.opens["challengers"]
    assert "Among readers whose opens we can see" in outcome.report_path.read_text()
    executed = outcome.executed_notebook.read_text()
    assert "Opens after Apple Mail Privacy Protection" in executed
    assert "Among readers whose opens we can see" in executed  # the notebook says it in words
    run = MlflowClient(outcome.tracking_uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert outcome.next_spec_path is not None, outcome.next_spec_note
    nxt = load_spec(outcome.next_spec_path)  # the next iteration reads the same history
    assert (outcome.next_spec_path.parent / nxt.data.history).resolve() == history.resolve()
