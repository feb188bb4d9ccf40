"""What report.html shows beside the decision agrees with what decided: guardrails as vetoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.report import guardrails_html, guardrails_table
from loopexp.simulate import DEMO_EFFECTS
from tests.conftest import DEMO_SPEC


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory):
    spec = load_spec(DEMO_SPEC)
    folder = tmp_path_factory.mktemp("guardrails")
    events, assignment = simulate_campaign(spec, 60_000, DEMO_EFFECTS, seed=7).write(folder)
    return analyze_files(spec, events, assignment)[1]


def test_guardrail_table_matches_the_veto(results) -> None:
    table = guardrails_table(results)
    guardrails = results.decision.guardrails
    assert len(table) == len(guardrails) > 0
    for row, g in zip(table.itertuples(index=False), guardrails, strict=True):
        assert row.variant == g.variant
        assert row.verdict == ("passed" if g.passed else "VETO")
        # harm mode: vetoed exactly when the interval's lower end lies beyond the margin
        if g.mode == "harm":
            assert (g.rel_ci_low > g.max_relative_increase) == (not g.passed)
    # the demo's urgency subject line really harms unsubscribes (truth x1.9)
    assert "VETO" in set(table[table["variant"] == "urgency"]["verdict"])


def test_no_guardrails_no_section(results) -> None:
    empty = results.model_copy(
        update={"decision": results.decision.model_copy(update={"guardrails": []})}
    )
    assert guardrails_html(empty) == ""


def test_report_page_has_the_guardrail_section(results, tmp_path: Path) -> None:
    from loopexp.pipeline import write_html_report

    page = write_html_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h4>Guardrails</h4>" in page and "VETO" in page
