"""What report.html shows beside the decision agrees with what decided: guardrails as vetoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopexp import analyze_files, load_spec, simulate_campaign
from loopexp.analysis.formatting import fmt_p, metric_label
from loopexp.report.views import decision_summary, readable_comparisons, readable_segment_lifts
from loopexp.sim.simulate import DEMO_EFFECTS
from tests.conftest import DEMO_SPEC


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory):
    spec = load_spec(DEMO_SPEC)
    folder = tmp_path_factory.mktemp("guardrails")
    events, assignment = simulate_campaign(spec, 60_000, DEMO_EFFECTS, seed=7).write(folder)
    return analyze_files(spec, events, assignment)[1]


def test_guardrail_table_matches_the_veto(results) -> None:
    table = results.guardrails_frame()
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
    assert empty.guardrails_html() == ""


def test_report_page_has_the_guardrail_section(results, tmp_path: Path) -> None:
    from loopexp.run.outputs import write_html_report

    page = write_html_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h4>Guardrails</h4>" in page and "VETO" in page


# --- the notebook's plain-words tables quote each interval at the level its test used ----------


def _level_text(level: float) -> str:
    return f"({100 * level:.3g}%)"


def test_decision_summary_quotes_the_level_the_decision_used(results) -> None:
    d = results.decision
    assert d.ci_level is not None and abs(d.ci_level - 0.95) > 1e-9  # Holm over two challengers
    text = decision_summary(results)
    assert f"{100 * d.ci_level:.3g}% interval" in text
    assert "95% interval" not in text


def test_readable_comparisons_intervals_carry_their_levels(results) -> None:
    table = readable_comparisons(results).reset_index()
    by_key = {(metric_label(c.metric), c.variant): c for c in results.comparisons}
    assert "95% interval of the lift" not in table.columns
    for row in table.to_dict(orient="records"):
        c = by_key[(row["metric"], row["variant"])]
        assert row["interval of the lift"].endswith(_level_text(c.ci_level))


def test_segment_lifts_show_the_adjusted_p_beside_the_adjusted_interval(results) -> None:
    metric = results.decision.primary_metric
    table = readable_segment_lifts(results, metric).reset_index()
    comparisons = [c for s in results.segments for c in s.comparisons if c.metric == metric]
    assert len(table) == len(comparisons) > 0
    assert "p (adjusted)" in table.columns and "p (unadjusted)" not in table.columns
    for row, c in zip(table.to_dict(orient="records"), comparisons, strict=True):
        assert row["interval of the lift"].endswith(_level_text(c.ci_level))
        assert row["p (adjusted)"] == fmt_p(c.p_value_adjusted)
