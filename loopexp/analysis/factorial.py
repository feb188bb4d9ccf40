"""Factorial (multivariate) tests read from their spec.

The spec-aware side of :mod:`loopexp.stats.factorial`, which works on plain values because the
statistics sit below the spec in the stages.
"""

from __future__ import annotations

from collections.abc import Mapping

from loopexp.design.spec import ExperimentSpec
from loopexp.stats.factorial import CellStats, FactorialAnalysis, FactorialError, fit_factorial


def analyze_factorial(
    spec: ExperimentSpec,
    cells: Mapping[str, CellStats | tuple[int, float, float]],
    metric: str | None = None,
    alpha: float | None = None,
) -> FactorialAnalysis:
    """Main effects and interactions of ``metric`` from per-cell sufficient statistics.

    ``cells`` maps each variant (cell) id of the multivariate ``spec`` to its ``(n, sum, sum_sq)``
    (e.g. from :meth:`loopexp.metrics.MetricTable.get`); ``metric`` defaults to the spec's primary
    metric and ``alpha`` to its decision alpha. Raises :class:`FactorialError` when the spec has
    no factors, or a cell is missing, has fewer than two recipients or no variation.
    """
    if not spec.factors:
        raise FactorialError(f"spec {spec.name!r} is not a multivariate (factorial) test")
    return fit_factorial(
        cells,
        design={variant.id: dict(variant.cell or {}) for variant in spec.variants},
        factors={f.name: [level.id for level in f.levels] for f in spec.factors},
        metric=metric or spec.primary_metric,
        alpha=spec.decision.alpha if alpha is None else alpha,
    )
