"""report.html and the MLflow summary in plain words (issue #30).

Percentages, not ``0.3951``; "clicks", not ``click_rate``; "no clear difference", not
``no_difference``; the subject line beside the variant id; how sure as a sentence, never a
certain "100 %"; statistical terms only in the appendix; a next step a marketer can act on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import Status
from loopexp.learn.history import ClosedLoopReport, IterationRecord
from loopexp.learn.shrinkage import Lift
from loopexp.report.closed_loop import report_html
from loopexp.report.plain import decision_words, how_sure, next_step
from loopexp.run.outputs import write_html_report
from loopexp.sim.simulate import DEMO_EFFECTS
from loopexp.track.describe import summary_line
from tests.conftest import DEMO_SPEC

#: What a marketer must not meet above the appendix.
JARGON = ("click_rate", "no_difference", "keep_testing", "p_value", "rel_lift", "SRM", "backlog")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory):
    spec = load_spec(DEMO_SPEC)
    folder = tmp_path_factory.mktemp("plain")
    events, assignment = simulate_campaign(spec, 20_000, DEMO_EFFECTS, seed=7).write(folder)
    return spec, analyze_files(spec, events, assignment)[1]


def _text(page: str) -> str:
    return re.sub(r"<[^>]+>", " ", page)


def test_report_page_speaks_plainly_above_the_appendix(analysed, tmp_path: Path) -> None:
    spec, results = analysed
    page = write_html_report(results, tmp_path / "report.html", spec=spec).read_text("utf-8")
    plain, _, appendix = page.partition("<details>")
    assert appendix, "the statistical detail sits in a folded appendix"
    words = _text(plain)
    for term in JARGON:
        assert term not in words, term
    assert "clicks" in words and "What to do next" in words
    assert not re.search(r"\b0\.\d{3,}", words), "rates as percentages, not 0.3951"
    assert not re.search(r"\de-\d", words), "no 1.3e-07"
    assert "100%" not in words and "chance to beat" not in words
    # Each variant's subject line beside its id (escaped like any text from a spec).
    for variant in spec.variants:
        assert variant.subject
        assert variant.subject.replace("'", "&#x27;") in plain
    assert "plausible worlds" in words
    assert "p_value_adjusted" in appendix  # the statistics are still there, for those who dig


def test_how_sure_is_a_sentence_never_certain() -> None:
    assert how_sure(0.999999) == "better than the control in more than 99 of 100 plausible worlds"
    assert how_sure(0.97) == "better than the control in 97 of 100 plausible worlds"
    assert how_sure(0.996) == "better than the control in more than 99 of 100 plausible worlds"
    assert how_sure(0.2) == "worse than the control in 80 of 100 plausible worlds"
    assert how_sure(0.0) == "worse than the control in more than 99 of 100 plausible worlds"
    assert how_sure(None) == "how sure: not known"


def test_every_decision_has_words_and_a_marketer_next_step(analysed) -> None:
    spec, results = analysed
    for status in Status:
        assert "_" not in decision_words(status)
        decided = results.model_copy(
            update={"decision": results.decision.model_copy(update={"status": status})}
        )
        step = next_step(decided, spec)
        assert step and "backlog" not in step and "spec" not in step, (status, step)
    assert decision_words("no_difference") == "No clear difference"


def test_mlflow_summary_says_how_sure_in_words(analysed) -> None:
    spec, results = analysed
    line = summary_line(results, spec)
    assert "plausible worlds" in line and "chance to beat" not in line


# --- the closed-loop report ------------------------------------------------------------------


def _record(iteration: int, status: str, winner: str | None, **kw) -> IterationRecord:
    return IterationRecord(
        run_id=f"r{iteration}",
        parent_run_id=f"r{iteration - 1}" if iteration > 1 else None,
        lineage_ok=True,
        iteration=iteration,
        name="weekly-offers-subject",
        test_type="subject_line",
        control="control" if iteration == 1 else "personal",
        status=status,
        winner=winner,
        best_challenger=winner or "story",
        primary_metric="click_rate",
        lift=Lift(value=0.3951, low=0.2, high=0.61, level=0.975),
        kpis={"click_rate": 0.051634, "open_rate": 0.333471},
        control_kpis={"click_rate": 0.045, "open_rate": 0.3},
        recipients=20_000,
        **kw,
    )


def test_closed_loop_report_speaks_plainly_above_the_appendix() -> None:
    report = ClosedLoopReport(
        campaign="weekly-offers",
        tracking_uri="sqlite:///mlflow.db",
        iterations=[
            _record(1, "ship", "personal", next_spec="next.yaml"),
            _record(2, "no_difference", None, next_spec="none: add variants under `backlog:`"),
        ],
        prior_mean=0.12,
        prior_sd=0.2,
        prior_tests=4,
        shrunk=[],
        cumulative=Lift(value=0.3951, low=0.2, high=0.61, level=0.95),
        cumulative_shrunk=Lift(value=0.33, low=0.18, high=0.5, level=0.95),
        next_steps=["The backlog ran dry: add ideas under `backlog:`"],
        notes=[],
    )
    subjects = {1: {"personal": "Anna, we picked these"}, 2: {"personal": "Anna, we picked these"}}
    page = report_html(report, plot=False, subjects=subjects)
    plain, _, appendix = page.partition("<details>")
    words = _text(plain)
    for term in (*JARGON, "lineage", "log lift", "shrunk", "sd"):
        assert not re.search(rf"\b{re.escape(term)}\b", words), term
    assert "No clear difference" in words and "Send the winner" in words
    assert "+39.5% clicks" in words and "5.2%" in words and "33.3%" in words
    assert "personal (“Anna, we picked these”)" in words
    assert "write one or two new ones" in words  # the backlog, for a marketer
    assert "backlog" in appendix and "Cumulative lift" in appendix and "r1" in appendix
