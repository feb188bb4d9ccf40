"""The paper cuts of issue #30, each with a test.

The segment_map snippet pastes as shown; ``HTML report:`` names the published ``<out>/report.html``;
"1 run"; rich tables stay readable at 80 columns; ``demo --iterations`` prints the
``loopexp ui … --campaign`` link.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import Status
from loopexp.assignment.assign import assign
from loopexp.cli import app
from loopexp.cli.assignment import unfilled_placeholders
from loopexp.cli.demo import loop_table
from loopexp.cli.errors import rule_for
from loopexp.cli.run import _report_path, runs_table
from loopexp.design.spec import SpecError, parse_spec
from loopexp.learn.history import ClosedLoopReport, IterationRecord
from loopexp.learn.shrinkage import Lift
from loopexp.sim.simulate import DEMO_EFFECTS
from tests.conftest import DEMO_SPEC

SUMMARY = (
    "SHIP: personal “{first_name}, we picked these for your spring” +39.4% clicks (97.5% CI "
    "+13.0% to +72.2%; better than the control in more than 99 of 100 plausible worlds); "
    "guardrails ok (unsubscribe_rate)."
)


def _render(table, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_the_segment_map_snippet_pastes_into_a_spec_as_shown() -> None:
    people = pd.DataFrame(
        {
            "recipient_key": [f"c{i}" for i in range(40)],
            "segment": ["Existing Customer", "Lapsed"] * 20,
        }
    )
    with pytest.raises(ValueError, match="segment_map") as info:
        assign(people, load_spec(DEMO_SPEC))
    snippet = str(info.value).split("e.g.\n", 1)[1].split("\nor set", 1)[0]
    pasted = yaml.safe_load(snippet)
    mapping = pasted["audience"]["segment_map"]
    assert set(mapping) == {"Existing Customer", "Lapsed"}
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["audience"].update(pasted["audience"])
    spec = parse_spec(yaml.safe_dump(data, sort_keys=False))  # validates: no problem reported
    assert spec.audience.segment_map == mapping


def test_html_report_line_names_the_published_copy(tmp_path: Path) -> None:
    attempt = tmp_path / "out" / "attempts" / "a1"
    attempt.mkdir(parents=True)
    (attempt / "report.html").write_text("x")
    outcome = SimpleNamespace(output_dir=tmp_path / "out", report_path=attempt / "report.html")
    assert _report_path(outcome) == attempt / "report.html"  # nothing published yet
    (tmp_path / "out" / "report.html").write_text("x")
    assert _report_path(outcome) == tmp_path / "out" / "report.html"


def _run(run_id: str, summary: str) -> SimpleNamespace:
    return SimpleNamespace(
        data=SimpleNamespace(tags={"loopexp.iteration": "1", "loopexp.summary": summary}),
        info=SimpleNamespace(
            run_id=run_id, status="FINISHED", run_name="#1 SHIP personal +39%", start_time=0
        ),
    )


def test_runs_table_says_1_run_and_keeps_the_summary_readable_at_80_columns() -> None:
    lines = _render(runs_table("spring-newsletter", [_run("a" * 32, SUMMARY)]))
    text = "\n".join(lines)
    assert "spring-newsletter · 1 run" in text and "1 runs" not in text
    assert max(map(len, lines)) <= 80
    col = next(line for line in lines if "summary" in line).index("summary")
    body = lines[3:]
    chunks = [
        line[col:].strip() for line in body[: next(i for i, x in enumerate(body) if "UTC" in x)]
    ]
    # Folded on words, never a word per line: each line of the summary holds several words.
    assert len(chunks) <= 6 and all(len(chunk.split()) >= 3 for chunk in chunks), text
    assert "2 runs" in "\n".join(_render(runs_table("c", [_run("a", "x"), _run("b", "y")])))


@pytest.fixture(scope="module")
def results():
    spec = load_spec(DEMO_SPEC)
    folder = Path(__import__("tempfile").mkdtemp(prefix="papercuts-"))
    events, assignment = simulate_campaign(spec, 6_000, DEMO_EFFECTS, seed=3).write(folder)
    return analyze_files(spec, events, assignment)[1]


def test_demo_loop_prints_the_ui_link_and_a_table_that_fits_80_columns(
    results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = IterationRecord(
        run_id="r1", parent_run_id=None, lineage_ok=True, iteration=1, name="weekly-offers-subject",
        test_type="subject_line", control="control", status="ship", winner="personal",
        best_challenger="personal", primary_metric="click_rate",
        lift=Lift(value=0.39, low=0.13, high=0.72, level=0.975), kpis={}, control_kpis={},
        recipients=6000, next_spec="none: no challenger",
        send_windows={"existing_customer": "07:00", "inactive": "12:00", "prospect": "19:00"},
    )  # fmt: skip
    report = ClosedLoopReport(
        campaign="weekly-offers", tracking_uri="sqlite:////x/mlflow.db", iterations=[record],
        prior_mean=None, prior_sd=None, prior_tests=0, shrunk=[], cumulative=Lift(value=None),
        cumulative_shrunk=Lift(value=None), next_steps=[], notes=[],
    )  # fmt: skip
    outcome = SimpleNamespace(
        results=results, tracking_uri="sqlite:////x/mlflow.db", experiment_id="7"
    )
    demo = SimpleNamespace(
        iterations=[SimpleNamespace(outcome=outcome, next_spec_path=None, next_spec_note="x")],
        report=report,
        report_path=tmp_path / "closed_loop_report.html",
        report_run_id="rr",
    )
    monkeypatch.setattr("loopexp.sim.demo.run_demo_loop", lambda *a, **k: demo)
    done = CliRunner().invoke(app, ["demo", "--iterations", "3"], terminal_width=80)
    assert done.exit_code == 0, done.output
    flat = " ".join(done.output.split())
    assert "loopexp ui --tracking-uri sqlite:////x/mlflow.db --campaign weekly-offers" in flat
    assert "#/experiments/7/runs" in flat
    lines = _render(
        loop_table([("1", Status.SHIP, "personal", "+39.0% (+13.0% to +72.0%)", "x.yaml")])
    )
    assert max(map(len, lines)) <= 80
    assert any("+39.0% (+13.0% to +72.0%)" in line for line in lines)  # never cut
    assert any("Send the winner" in line for line in lines)
    assert re.search(r"Send windows.*existing_customer 07:00", done.output)


def _problems(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="spec.yaml")
    return str(info.value)


def test_yaml_and_pydantic_wording_never_reaches_users_and_the_quote_is_found() -> None:
    lines = DEMO_SPEC.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith('subject: "The spring'))
    lines[at] = lines[at].rstrip('"')  # an unclosed quote
    message = _problems("\n".join(lines))
    assert f'line {at + 1}: not valid YAML: the quote " opened here is not closed' in message
    assert "<unicode string>" not in message
    message = _problems("name: [unclosed\nfoo: 1\n")
    assert "<unicode string>" not in message and "line 2, column 4" in message
    typo = DEMO_SPEC.read_text().replace("primary_metric: click_rate", "primary_metric: clik_rate")
    message = _problems(typo)
    assert "Value error" not in message
    assert "did you mean 'click_rate'?" in message


def test_a_missing_file_gets_a_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "events.parquet").write_bytes(b"")
    (tmp_path / "spring.yaml").write_text("x")
    with pytest.raises(SpecError, match=r"did you mean '.*spring\.yaml'\?"):
        load_spec(tmp_path / "sprng.yaml")
    missing = FileNotFoundError(2, "No such file or directory", str(tmp_path / "evnts.parquet"))
    rule = rule_for(FileNotFoundError)
    assert rule is not None and rule.code == 2
    assert f"did you mean '{tmp_path / 'events.parquet'}'?" in rule.message(missing)


def test_a_placeholder_no_column_fills_is_a_warning(tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC)
    warnings = unfilled_placeholders(spec, ["recipient_key", "segment"], "list.csv")
    assert warnings == [
        "variant 'personal' subject uses {first_name}, but list.csv has no 'first_name' column: "
        "add it to the list, or make sure your ESP fills it"
    ]
    assert unfilled_placeholders(spec, ["recipient_key", "segment", "first_name"], "x") == []
    people = pd.DataFrame(
        {"recipient_key": [f"c{i}" for i in range(30)], "segment": ["prospect"] * 30}
    )
    people.to_csv(tmp_path / "list.csv", index=False)
    done = CliRunner().invoke(
        app,
        ["assign", str(DEMO_SPEC), "--recipients", str(tmp_path / "list.csv"), "--out",
         str(tmp_path / "out")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "uses {first_name}, but list.csv has no 'first_name' column" in " ".join(
        done.output.split()
    )
