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
so nothing is lost by keeping only sufficient statistics. Not wired into the decision: a ship
decision on a factorial needs its own rule (which cell, which effect), to be designed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps

from loopexp.core.errors import InputError
from loopexp.design.spec import ExperimentSpec


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


def analyze_factorial(
    spec: ExperimentSpec,
    cells: Mapping[str, CellStats | tuple[int, float, float]],
    metric: str | None = None,
    alpha: float | None = None,
) -> FactorialAnalysis:
    """Main effects and interactions of ``metric`` from per-cell sufficient statistics.

    ``cells`` maps each variant (cell) id of the multivariate ``spec`` to its ``(n, sum, sum_sq)``
    (e.g. from :meth:`loopexp.metrics.MetricTable.get`). Raises :class:`FactorialError` when a
    cell is missing, has fewer than two recipients or no variation.
    """
    if not spec.factors:
        raise FactorialError(f"spec {spec.name!r} is not a multivariate (factorial) test")
    metric = metric or spec.primary_metric
    alpha = spec.decision.alpha if alpha is None else alpha
    factors = [f.name for f in spec.factors]
    rows = []
    for variant in spec.variants:
        if variant.id not in cells:
            raise FactorialError(f"no statistics for cell {variant.id!r}: keep testing")
        n, total, total_sq = (float(x) for x in cells[variant.id])
        if n < 2:
            raise FactorialError(f"cell {variant.id!r} has {n:.0f} recipients: keep testing")
        mean = total / n
        var = (total_sq - total * mean) / (n - 1)
        if not var > 0:
            raise FactorialError(
                f"cell {variant.id!r} has no variation in {metric} (all {mean:g}): keep testing"
            )
        rows.append({"cell": variant.id, **(variant.cell or {}), "n": n, "mean": mean, "var": var})
    frame = pd.DataFrame(rows)
    frame["weight"] = frame["n"] / frame["var"]
    for name in factors:  # fixed level order: the spec's, first level as the reference
        levels = [level.id for level in next(f for f in spec.factors if f.name == name).levels]
        frame[name] = pd.Categorical(frame[name], categories=levels)
    formula = "mean ~ " + " * ".join(f"C({name}, Sum)" for name in factors)
    fit = smf.wls(formula, data=frame, weights=frame["weight"]).fit(
        cov_type="fixed scale", cov_kwds={"scale": 1.0}, use_t=False
    )
    effects = [
        _contrast(fit, weights, term, label, alpha)
        for term, label, weights in _contrasts(frame, spec)
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


def _contrasts(frame: pd.DataFrame, spec: ExperimentSpec):
    """(term, label, weights over cells) of every main effect and 2×2 interaction."""
    factors = spec.factors or []
    for factor in factors:
        levels = [level.id for level in factor.levels]
        ref = frame[factor.name] == levels[0]
        for level in levels[1:]:
            at = frame[factor.name] == level
            weights = at / at.sum() - ref / ref.sum()
            yield factor.name, f"{level} - {levels[0]}", weights.to_numpy(dtype=float)
    for a, b in itertools.combinations(factors, 2):
        if len(a.levels) != 2 or len(b.levels) != 2:
            continue  # the joint Wald test of the term covers larger interactions
        a0, a1 = (level.id for level in a.levels)
        b0, b1 = (level.id for level in b.levels)
        sign = np.where(frame[a.name] == a1, 1.0, -1.0) * np.where(frame[b.name] == b1, 1.0, -1.0)
        weights = sign / (len(frame) / 4)  # averaged over the other factors' levels
        yield f"{a.name}:{b.name}", f"({a1} - {a0}) at {b1} - at {b0}", weights


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
