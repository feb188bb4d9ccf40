"""A small run of bench/calibration.py in ``make test``: every scenario of the decision layer's
calibration table with a few hundred campaigns, each within 4 Monte Carlo SE of its target.

The full table (10,000 campaigns per row) is bench/calibration.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("calibration", ROOT / "bench" / "calibration.py")
calibration = importlib.util.module_from_spec(_spec)
sys.modules["calibration"] = calibration  # dataclasses look their module up there
_spec.loader.exec_module(calibration)

SIMS = 200


@pytest.fixture(scope="module")
def outcomes():
    """Every scenario with SIMS campaigns (seeded)."""
    return {o.name: o for o in calibration.run_all(SIMS, seed=2026)}


def test_every_scenario_is_within_tolerance(outcomes):
    """A/A false ships (2, 3, 8 arms), interval coverage (small / large n, rare proportions,
    heavy-tailed revenue), guardrail false vetoes / passes and power, decision error rates."""
    bad = {name: (o.rate, o.target, o.kind) for name, o in outcomes.items() if not o.ok}
    assert not bad, bad
    assert len(outcomes) == 16


def test_outcome_check_is_not_vacuous():
    """The tolerance rejects a rate 5 SE away from its target, on each side that matters."""
    se = calibration.Outcome("x", "x", SIMS, 0.05, 0.05, "about").se
    assert not calibration.Outcome("x", "x", SIMS, 0.05 + 5 * se, 0.05, "about").ok
    assert not calibration.Outcome("x", "x", SIMS, 0.05 + 5 * se, 0.05, "at_most").ok
    assert calibration.Outcome("x", "x", SIMS, 0.05 - 5 * se, 0.05, "at_most").ok
    se_08 = calibration.Outcome("x", "x", SIMS, 0.8, 0.8, "at_least").se
    assert not calibration.Outcome("x", "x", SIMS, 0.8 - 5 * se_08, 0.8, "at_least").ok
    assert calibration.Outcome("x", "x", SIMS, 0.8 - 3 * se_08, 0.8, "at_least").ok


def test_scenarios_have_power_to_see_a_broken_interval(outcomes):
    """Sensitivity: the harm guardrail on a +30 % rise at 20,000/arm vetoes in some runs (the
    scenario exercises vetoes), and the MDE challenger ships in most (the design can fail)."""
    assert outcomes["guardrail_harm_power_x1.3"].rate > 0.05
    assert outcomes["decision_power"].rate > 0.6
