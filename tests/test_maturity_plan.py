"""Planned samples (issue 28): `plan --write`, `init`'s hint, and an underpowered first test."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopexp import TrueEffects, analyze_files, load_spec, simulate_campaign
from loopexp.analysis.results import Status
from loopexp.cli import app
from tests.conftest import DEMO_SPEC

runner = CliRunner()


@pytest.fixture(scope="module")
def first_test(tmp_path_factory: pytest.TempPathFactory):
    """A newcomer's first test: the demo spec (no planned sample) sent to 2,000 per variant."""
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 6_000, TrueEffects(open={"personal": 1.8}), seed=3)
    return spec, campaign.write(tmp_path_factory.mktemp("first"))


def test_an_underpowered_first_test_says_so_and_shows_the_shrunk_lift(first_test) -> None:
    spec, files = first_test
    assert spec.planned_recipients_per_variant is None
    _, res = analyze_files(spec, *files)
    d = res.decision
    assert d.status == Status.SHIP and d.winner == "personal"  # significant, but on a tiny list
    (reason,) = [r for r in d.reasons if r.startswith("Underpowered")]
    assert "this list can detect +" in reason and "shrunk" in reason
    assert d.detectable_rel_lift is not None and d.detectable_rel_lift > spec.decision.mde_relative
    assert d.rel_lift is not None and d.shrunk_rel_lift is not None
    assert 0 < d.shrunk_rel_lift < d.rel_lift  # pulled towards 0, the winner's curse
    detectable = re.search(r"can detect \+(\d+)%", reason)
    assert detectable and int(detectable.group(1)) == round(100 * d.detectable_rel_lift)


def test_with_its_planned_sample_the_same_read_keeps_testing(first_test) -> None:
    spec, files = first_test
    planned = spec.model_copy(update={"planned_recipients_per_variant": 47_805})
    _, res = analyze_files(planned, *files)
    assert res.decision.status == Status.KEEP_TESTING
    assert any(r.startswith("Underpowered") and "47,805" in r for r in res.decision.reasons)


def test_a_read_at_the_planned_sample_is_not_underpowered(first_test) -> None:
    spec, files = first_test
    planned = spec.model_copy(update={"planned_recipients_per_variant": 2_000})
    _, res = analyze_files(planned, *files)
    assert not any(r.startswith("Underpowered") for r in res.decision.reasons)
    assert res.decision.detectable_rel_lift is None


def test_plan_write_puts_the_planned_sample_into_the_spec(tmp_path: Path) -> None:
    spec_path = Path(shutil.copy(DEMO_SPEC, tmp_path / "spec.yaml"))
    first_line = spec_path.read_text().splitlines()[0]
    for _ in range(2):  # a second --write replaces the value, never adds a second key
        result = runner.invoke(app, ["plan", str(spec_path), "--baseline", "0.04", "--write"])
        assert result.exit_code == 0, result.output
    text = spec_path.read_text()
    assert text.splitlines()[0] == first_line  # comments kept
    assert text.count("planned_recipients_per_variant:") == 1
    planned = load_spec(spec_path).planned_recipients_per_variant
    assert planned is not None and f"{planned:,}" in result.output


def test_init_includes_the_planned_sample_commented_and_plan_write_fills_it(
    tmp_path: Path,
) -> None:
    spec_path = tmp_path / "news.yaml"
    result = runner.invoke(app, ["init", str(spec_path), "--campaign", "news"])
    assert result.exit_code == 0, result.output
    text = spec_path.read_text()
    assert re.search(r"^# planned_recipients_per_variant: \d+  # .*--write", text, flags=re.M)
    assert load_spec(spec_path).planned_recipients_per_variant is None
    result = runner.invoke(app, ["plan", str(spec_path), "--baseline", "0.03", "--write"])
    assert result.exit_code == 0, result.output
    assert "# planned_recipients_per_variant" not in spec_path.read_text()
    assert load_spec(spec_path).planned_recipients_per_variant is not None
