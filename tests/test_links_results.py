"""The per-link click distribution in results.json, the HTML report and the notebook's table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopexp import ExperimentResults, analyze_files, load_spec, simulate_campaign
from loopexp.report.views import links_table
from loopexp.run.outputs import write_html_report
from loopexp.sim.simulate import DEMO_EFFECTS, LINKS
from tests.conftest import DEMO_SPEC


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory):
    spec = load_spec(DEMO_SPEC)
    folder = tmp_path_factory.mktemp("links")
    events, assignment = simulate_campaign(spec, 30_000, DEMO_EFFECTS, seed=11).write(folder)
    return spec, folder, events, assignment, analyze_files(spec, events, assignment)[1]


def test_results_carry_human_clicks_per_link_per_variant(analysed, tmp_path: Path) -> None:
    spec, _, _, _, results = analysed
    frame = results.links_frame()
    assert set(frame["variant_id"]) == {v.id for v in spec.variants}
    assert set(frame["link"]) == set(LINKS)
    # shares are of each variant's human clicks; clickers never exceed clicks
    assert frame.groupby("variant_id")["share"].sum().to_numpy() == pytest.approx(1.0)
    assert (frame["clickers"] <= frame["clicks"]).all() and (frame["clickers"] > 0).all()
    # the simulator sends 50 / 40 / 10 % of human clicks to new / sale / account
    control = frame[frame["variant_id"] == spec.control].set_index("link")["share"]
    assert control["https://shop.example/account"] == pytest.approx(0.10, abs=0.03)
    assert control["https://shop.example/new"] == pytest.approx(0.50, abs=0.04)
    # extended contract: written to and read back from results.json
    path = results.write_json(tmp_path / "results.json")
    assert ExperimentResults.read_json(path).links == results.links


def test_links_table_puts_control_first_and_the_hardly_clicked_link_last(analysed) -> None:
    spec, _, _, _, results = analysed
    table = links_table(results)
    assert table.columns[0] == spec.control
    assert table.index[-1] == "https://shop.example/account"
    assert table.iloc[:, 0].is_monotonic_decreasing


def test_events_without_urls_give_no_link_table_and_no_section(analysed, tmp_path: Path) -> None:
    spec, _, events, assignment, _ = analysed
    no_urls = tmp_path / "events.parquet"
    pd.read_parquet(events).drop(columns=["url"]).to_parquet(no_urls)
    results = analyze_files(spec, no_urls, assignment)[1]
    assert results.links == [] and links_table(results).empty
    page = write_html_report(results, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Which links drew" not in page


def test_html_report_shows_the_link_shares(analysed, tmp_path: Path) -> None:
    _, _, _, _, results = analysed
    page = write_html_report(results, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Which links drew the human clicks" in page
    assert "https://shop.example/account" in page


def test_engine_link_table_equals_the_standalone_query(analysed) -> None:
    """analyze_files takes the link table from the engine's own validated events (one pass)."""
    from loopexp.metrics import compute_metrics, link_clicks

    _, _, events, assignment, results = analysed
    table = compute_metrics(events, assignment, ["click_rate"], links=True)
    standalone = link_clicks(events, assignment)
    pd.testing.assert_frame_equal(table.links, standalone)
    assert results.links_frame().equals(standalone)
    assert compute_metrics(events, assignment, ["click_rate"]).links is None
