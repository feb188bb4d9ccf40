"""Does an effect differ between segments? Cochran's Q on the per-segment log ratio.

Segment results are read one by one, and one of four segments "winning" is expected by chance.
Cochran's Q asks the question a user means: is the relative lift the same in every segment?
Q = Σ w_i (y_i - ȳ)², y_i the log ratio treatment/control in segment i, w_i = 1 / Var(y_i)
(delta method), ȳ the inverse-variance-weighted mean; Q ~ χ²(k - 1) under homogeneity (as
``metafor::rma(method = "FE")``'s QE test in R). I² = max(0, (Q - df) / Q) is the share of the
variation beyond chance. The log scale matches a multiplicative lift, which is how an e-mail
variant typically acts on segments with different base rates. Segments where either arm has no
event (no finite log ratio) are left out and the result lists the segments used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as sps

Cell = tuple[str, int, float, float, int, float, float]
"""(segment, n_t, sum_t, sum_sq_t, n_c, sum_c, sum_sq_c)."""


def log_ratio(kind: str, cell: Cell) -> tuple[float, float] | None:
    """Log ratio of means and its delta-method variance in one segment; None when undefined."""
    _, n_t, s_t, ss_t, n_c, s_c, ss_c = cell
    if min(n_t, n_c) < 2 or s_t <= 0 or s_c <= 0:
        return None
    m_t, m_c = s_t / n_t, s_c / n_c
    if kind == "proportion":
        var = (1 - m_t) / s_t + (1 - m_c) / s_c
    else:
        v_t = max(ss_t - n_t * m_t * m_t, 0.0) / (n_t - 1)
        v_c = max(ss_c - n_c * m_c * m_c, 0.0) / (n_c - 1)
        var = v_t / (n_t * m_t * m_t) + v_c / (n_c * m_c * m_c)
    if var <= 0:
        return None
    return math.log(m_t / m_c), var


def cochran_q(
    kind: str, cells: Sequence[Cell]
) -> tuple[float, int, float, float, list[str]] | None:
    """``(Q, df, p, I², segments used)``; None with fewer than two usable segments."""
    usable = [(c[0], r) for c in cells if (r := log_ratio(kind, c)) is not None]
    if len(usable) < 2:
        return None
    weights = [1 / var for _, (_, var) in usable]
    ys = [y for _, (y, _) in usable]
    mean = sum(w * y for w, y in zip(weights, ys, strict=True)) / sum(weights)
    q = sum(w * (y - mean) ** 2 for w, y in zip(weights, ys, strict=True))
    df = len(usable) - 1
    p = float(sps.chi2.sf(q, df))
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return float(q), df, p, float(i2), [seg for seg, _ in usable]
