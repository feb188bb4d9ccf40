"""Multiple-comparison control across arms (and metrics), and intervals that match it.

Adjusted p-values are computed here in numpy rather than with statsmodels' ``multipletests``:
that function calls ``gc.collect()`` on every call, which alone made one ``analyze`` take ~0.12 s
instead of a few ms (1,000 comparisons must take well under a second; see bench/bench_analyze.py).
The values equal ``multipletests``' (tests check it on random and reference inputs).

An adjusted p-value must be read beside an interval at the level that adjusted test used, or the
two disagree (an "adjusted p = 0.2" next to an interval excluding 0). :func:`interval_alphas` gives,
for each hypothesis, the ``alpha`` of a two-sided interval that excludes the null exactly when the
adjusted p-value is below ``alpha``:

* bonferroni: ``alpha / m`` for every hypothesis;
* holm: ``alpha / (m - k + 1)`` for the k-th smallest p-value when Holm rejects it (it was tested
  at that level), ``alpha / m`` otherwise (then its p is >= alpha / m, so the interval keeps the
  null);
* fdr_bh: with R rejections, ``R alpha / m`` for the rejected ones (Benjamini & Yekutieli's 2005
  false-coverage-rate intervals) and ``(R + 1) alpha / m`` for the others;
* none: ``alpha``.

Each interval covers its parameter with probability at least ``1 - alpha``, and the intervals of
the rejected hypotheses are the ones those procedures are known to support.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")


def _check(method: str) -> None:
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {CORRECTIONS}")


def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values in input order (``none`` returns them unchanged)."""
    _check(method)
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0 or method == "none":
        return [float(x) for x in p]
    if method == "bonferroni":
        adjusted = np.minimum(p * m, 1.0)
    elif method == "holm":
        order = np.argsort(p, kind="mergesort")
        stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
    else:  # fdr_bh
        order = np.argsort(p, kind="mergesort")[::-1]
        ranks = m - np.arange(m)
        stepped = np.minimum.accumulate(p[order] * m / ranks)
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
    return [float(x) for x in adjusted]


def interval_alphas(p_values: Sequence[float], method: str, alpha: float) -> list[float]:
    """Per hypothesis, the ``alpha`` of the two-sided interval that matches its adjusted p-value."""
    _check(method)
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return []
    if method == "none":
        return [alpha] * m
    if method == "bonferroni":
        return [alpha / m] * m
    adjusted = np.asarray(adjust_pvalues(p, method))
    rejected = adjusted < alpha
    if method == "holm":
        order = np.argsort(p, kind="mergesort")
        levels = np.full(m, alpha / m)
        levels[order] = np.where(rejected[order], alpha / (m - np.arange(m)), alpha / m)
        return [float(x) for x in levels]
    n_rejected = int(rejected.sum())
    return [
        float(alpha * n_rejected / m) if r else float(alpha * min(n_rejected + 1, m) / m)
        for r in rejected
    ]
