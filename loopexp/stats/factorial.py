"""Factorial (multivariate) tests: main effects and interactions from cell-level statistics.

A multivariate spec crosses factors (e.g. 2 subjects × 2 contents); each cell is a variant. The
engine returns per cell ``n``, ``sum`` and ``sum_sq`` of a metric; this module fits the saturated
linear model of the cell means with statsmodels (WLS, each cell weighted by n / s², the inverse
variance of its mean, with the scale fixed at 1), so that:

- a main effect is the difference between a level and the factor's first level, averaged over
  the levels of the other factors (on the metric's own scale: a rate difference for a rate);
- a two-factor interaction (both factors with two levels) is the difference of differences;
- each term (factor or interaction) gets a joint Wald χ² test (``wald_test_terms``).

The standard errors equal those of an individual-level OLS with HC2 errors (checked in the tests),
so nothing is lost by keeping only sufficient statistics. The design comes as plain values (cells
and factor levels); :func:`loopexp.analysis.factorial.analyze_factorial` reads them from a spec. Not
wired into the decision: a ship
decision on a factorial needs its own rule (which cell, which effect), to be designed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps

from loopexp.core.errors import InputError


class FactorialError(InputError):
    """The cells cannot be analysed (missing, empty or without variation): keep testing."""


class CellStats(NamedTuple):
    """Sufficient statistics of one cell: ``n``, ``sum``, ``sum_sq`` of the per-recipient metric."""

    n: int
    sum: float
    sum_sq: float


class FactorialEffect(NamedTuple):
    """One contrast of cell means.

    Attributes:
        term: ``subject`` (main effect) or ``subject:content`` (interaction).
        contrast: what is compared, e.g. ``personal - plain`` or
            ``(personal - plain) at story - at grid``.
        estimate: the contrast on the metric's scale.
        std_error: its standard error.
        ci_low: lower end of the (1 - alpha) confidence interval.
        ci_high: upper end.
        p_value: two-sided p-value (normal).
    """

    term: str
    contrast: str
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float


class FactorialTerm(NamedTuple):
    """Joint Wald test of one model term (all its coefficients zero)."""

    term: str
    df: int
    chi2: float
    p_value: float


class FactorialAnalysis(NamedTuple):
    """Main effects, interactions and term tests of one metric in a factorial test."""

    metric: str
    cells: dict[str, dict[str, float]]
    """Per cell: ``n`` and ``mean``."""
    effects: list[FactorialEffect]
    terms: list[FactorialTerm]
    alpha: float

    def to_frame(self) -> pd.DataFrame:
        """The effects as a table."""
        return pd.DataFrame([e._asdict() for e in self.effects])

    def summary(self) -> str:
        """Effects and term tests as plain text."""
        lines = [f"Factorial analysis of {self.metric} ({1 - self.alpha:.0%} CIs)"]
        for e in self.effects:
            lines.append(
                f"  {e.term:24s} {e.contrast:40s} {e.estimate:+.4f} "
                f"[{e.ci_low:+.4f}, {e.ci_high:+.4f}]  p={e.p_value:.3g}"
            )
        lines.append("Term tests (Wald χ²):")
        lines += [f"  {t.term:24s} df={t.df} χ²={t.chi2:.3f} p={t.p_value:.3g}" for t in self.terms]
        return "\n".join(lines)


def fit_factorial(
    cells: Mapping[str, CellStats | tuple[int, float, float]],
    design: Mapping[str, Mapping[str, str]],
    factors: Mapping[str, Sequence[str]],
    metric: str,
    alpha: float,
) -> FactorialAnalysis:
    """Main effects and interactions of ``metric`` from per-cell sufficient statistics.

    Plain values, so the statistics need no spec: ``design`` maps each cell id, in the design's
    order, to its level of every factor; ``factors`` maps each factor to its level ids, the
    first the reference; ``cells`` maps each cell id to its ``(n, sum, sum_sq)``. Raises
    :class:`FactorialError` when a cell is missing, has fewer than two recipients or no
    variation.
    """
    rows = []
    for cell_id, levels in design.items():
        if cell_id not in cells:
            raise FactorialError(f"no statistics for cell {cell_id!r}: keep testing")
        n, total, total_sq = (float(x) for x in cells[cell_id])
        if n < 2:
            raise FactorialError(f"cell {cell_id!r} has {n:.0f} recipients: keep testing")
        mean = total / n
        var = (total_sq - total * mean) / (n - 1)
        if not var > 0:
            raise FactorialError(
                f"cell {cell_id!r} has no variation in {metric} (all {mean:g}): keep testing"
            )
        rows.append({"cell": cell_id, **levels, "n": n, "mean": mean, "var": var})
    frame = pd.DataFrame(rows)
    frame["weight"] = frame["n"] / frame["var"]
    for name, levels in factors.items():  # fixed level order: the first level is the reference
        frame[name] = pd.Categorical(frame[name], categories=list(levels))
    formula = "mean ~ " + " * ".join(f"C({name}, Sum)" for name in factors)
    fit = smf.wls(formula, data=frame, weights=frame["weight"]).fit(
        cov_type="fixed scale", cov_kwds={"scale": 1.0}, use_t=False
    )
    effects = [
        _contrast(fit, weights, term, label, alpha)
        for term, label, weights in _contrasts(frame, factors)
    ]
    tests = fit.wald_test_terms(skip_single=False, scalar=True).table
    terms = [
        FactorialTerm(_term_name(str(name)), int(row["df_constraint"]), float(row["statistic"]),
                      float(row["pvalue"]))
        for name, row in tests.iterrows()
        if name != "Intercept"
    ]  # fmt: skip
    return FactorialAnalysis(
        metric=metric,
        cells={r["cell"]: {"n": int(r["n"]), "mean": float(r["mean"])} for r in rows},
        effects=effects,
        terms=terms,
        alpha=alpha,
    )


def _contrasts(frame: pd.DataFrame, factors: Mapping[str, Sequence[str]]):
    """(term, label, weights over cells) of every main effect and 2×2 interaction."""
    for name, levels in factors.items():
        ref = frame[name] == levels[0]
        for level in levels[1:]:
            at = frame[name] == level
            weights = at / at.sum() - ref / ref.sum()
            yield name, f"{level} - {levels[0]}", weights.to_numpy(dtype=float)
    for a, b in itertools.combinations(factors, 2):
        if len(factors[a]) != 2 or len(factors[b]) != 2:
            continue  # the joint Wald test of the term covers larger interactions
        a0, a1 = factors[a]
        b0, b1 = factors[b]
        sign = np.where(frame[a] == a1, 1.0, -1.0) * np.where(frame[b] == b1, 1.0, -1.0)
        weights = sign / (len(frame) / 4)  # averaged over the other factors' levels
        yield f"{a}:{b}", f"({a1} - {a0}) at {b1} - at {b0}", weights


def _contrast(fit, weights: np.ndarray, term: str, label: str, alpha: float) -> FactorialEffect:
    # Cell means are design @ params, so a contrast of cells is (weights @ design) @ params.
    row = weights @ np.asarray(fit.model.exog)
    estimate = float(row @ fit.params.to_numpy())
    se = float(np.sqrt(row @ fit.cov_params().to_numpy() @ row))
    z = sps.norm.ppf(1 - alpha / 2)
    p = float(2 * sps.norm.sf(abs(estimate) / se))
    return FactorialEffect(term, label, estimate, se, estimate - z * se, estimate + z * se, p)


def _term_name(name: str) -> str:
    """``C(subject, Sum):C(content, Sum)`` → ``subject:content``."""
    return ":".join(part.removeprefix("C(").split(",")[0] for part in name.split(":"))
