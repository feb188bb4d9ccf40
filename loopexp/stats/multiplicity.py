"""Multiple-comparison control across arms (and metrics), via statsmodels ``multipletests``."""

from __future__ import annotations

from collections.abc import Sequence

from statsmodels.stats.multitest import multipletests

CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")


def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values in input order (``none`` returns them unchanged)."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {CORRECTIONS}")
    if not p_values or method == "none":
        return [float(p) for p in p_values]
    return [float(p) for p in multipletests(list(p_values), method=method)[1]]
