"""Factorial analysis from cell statistics (loopexp.analysis.factorial) against individual OLS.

Reference: statsmodels OLS on the individual rows, ``y ~ C(subject) * C(content)`` with HC2
standard errors (for a saturated model of cell dummies, HC2 gives each cell mean the variance
s²/n that the cell-level fit uses), and the same contrasts via ``t_test``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from loopexp.analysis.factorial import analyze_factorial
from loopexp.design.spec import parse_spec
from loopexp.stats.factorial import CellStats, FactorialError
from tests.test_assign_spec import FACTORIAL

# True click probabilities: personal subject +2 points with grid, +5 with story (interaction +3).
TRUTH = {
    ("plain", "grid"): 0.10,
    ("plain", "story"): 0.12,
    ("personal", "grid"): 0.12,
    ("personal", "story"): 0.17,
}


def simulate(n_per_cell: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = [
        pd.DataFrame({"subject": s, "content": c, "y": (rng.random(n_per_cell) < p).astype(float)})
        for (s, c), p in TRUTH.items()
    ]
    return pd.concat(parts, ignore_index=True)


def cell_stats(rows: pd.DataFrame) -> dict[str, CellStats]:
    out = {}
    for (s, c), g in rows.groupby(["subject", "content"]):
        out[f"{s}-{c}"] = CellStats(len(g), float(g["y"].sum()), float((g["y"] ** 2).sum()))
    return out


def test_matches_individual_level_ols_with_hc2():
    spec = parse_spec(FACTORIAL)
    rows = simulate(3_000, seed=1)
    result = analyze_factorial(spec, cell_stats(rows), metric="click_rate")
    rows["subject"] = pd.Categorical(rows["subject"], ["plain", "personal"])
    rows["content"] = pd.Categorical(rows["content"], ["grid", "story"])
    ols = smf.ols("y ~ C(subject) * C(content)", data=rows).fit(cov_type="HC2")
    names = list(ols.params.index)  # Intercept, subject[personal], content[story], interaction
    # Cell means from the treatment-coded individual fit: contrasts as combinations of params.
    contrasts = {
        ("subject", "personal - plain"): [0, 1, 0, 0.5],
        ("content", "story - grid"): [0, 0, 1, 0.5],
        ("subject:content", "(personal - plain) at story - at grid"): [0, 0, 0, 1],
    }
    assert len(names) == 4
    got = {(e.term, e.contrast): e for e in result.effects}
    assert set(got) == set(contrasts)
    for key, weights in contrasts.items():
        ref = ols.t_test(np.array([weights]))
        assert got[key].estimate == pytest.approx(float(ref.effect[0]), rel=1e-10)
        assert got[key].std_error == pytest.approx(float(ref.sd[0, 0]), rel=1e-8)
        assert got[key].p_value == pytest.approx(float(ref.pvalue), rel=1e-6)
    # Term tests: one degree of freedom each for a 2×2; the interaction's χ² is its z².
    terms = {t.term: t for t in result.terms}
    assert set(terms) == {"subject", "content", "subject:content"}
    inter = got[("subject:content", "(personal - plain) at story - at grid")]
    assert terms["subject:content"].chi2 == pytest.approx(
        (inter.estimate / inter.std_error) ** 2, rel=1e-8
    )
    assert "subject:content" in result.summary()


def test_recovers_a_true_interaction():
    spec = parse_spec(FACTORIAL)
    result = analyze_factorial(spec, cell_stats(simulate(20_000, seed=2)), metric="click_rate")
    got = {e.term: e for e in result.effects}
    assert got["subject:content"].ci_low < 0.03 < got["subject:content"].ci_high
    assert got["subject:content"].p_value < 0.01
    assert got["subject"].ci_low < 0.035 < got["subject"].ci_high  # (0.02 + 0.05) / 2


def test_degenerate_cells_are_an_error_not_evidence():
    spec = parse_spec(FACTORIAL)
    stats = cell_stats(simulate(500, seed=3))
    with pytest.raises(FactorialError, match="no statistics for cell 'plain-grid'"):
        analyze_factorial(spec, {k: v for k, v in stats.items() if k != "plain-grid"})
    with pytest.raises(FactorialError, match="no variation"):
        analyze_factorial(spec, {**stats, "plain-grid": CellStats(100, 0.0, 0.0)})
    with pytest.raises(FactorialError, match="1 recipients"):
        analyze_factorial(spec, {**stats, "plain-grid": CellStats(1, 1.0, 1.0)})
