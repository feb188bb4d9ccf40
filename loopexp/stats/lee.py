"""Lee (2009) trimming bounds for a binary outcome seen only on part of each arm.

Lee, D. S. (2009), "Training, Wages, and Sample Selection: Estimating Sharp Bounds on Treatment
Effects", *Review of Economic Studies* 76(3), 1071-1102. Each unit's outcome ``y`` is observed
only when it is *selected*; the selection may depend on the arm. Under **monotone selection**
(the treatment moves selection in one direction only, for every unit) the units selected in the
arm with the lower selection share ``q_low`` are all "always-selected", and in the other arm
they are a ``q_low / q_high`` share of the selected. Trimming that arm's selected outcomes by
``p = 1 - q_low / q_high`` from the top, then from the bottom, bounds the mean outcome of the
always-selected there; the difference with the other arm's selected mean bounds the effect on
the always-selected, sharply.

Our own code, not a package: for a 0/1 outcome the trimmed means have a closed form in three
shares per arm (``r`` = selected with y = 1, ``z`` = selected with y = 0, the rest unselected):
the selected mean of the trimmed arm is ``min(1, r / q_low)`` at most and ``max(0, 1 - z /
q_low)`` at least. Packages trim at empirical quantiles, which for a 0/1 outcome lands on a tie
and trims whole units; the closed form is the exact (fractional) trimming of Lee's definition.
``tests/data/lee_bounds.R`` computes the same bounds by literally sorting and trimming each
recipient's outcome, and the intervals with analytic derivatives.

Confidence interval: the lower bound minus and the upper bound plus ``z_{1-alpha/2}`` standard
errors (Lee 2009, section 4: covers the whole identified set with probability ``1 - alpha``, so
the effect too, conservatively). Standard errors by the delta method on the multinomial shares
(``r, z`` per arm), derivatives by central differences of the piece of the bound functions the
estimate lies on (which arm is trimmed, which mean clipped); with a
0/1 outcome the trimming quantile sits on a mass point, where Lee's continuous-outcome variance
formula does not apply but the closed form above is smooth (away from equal selection shares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_STEP = 1e-7


@dataclass(frozen=True)
class LeeBounds:
    """Bounds on the effect (``treatment - control``) among the always-selected units.

    Attributes:
        diff_low, diff_high: bounds on the difference of means (rates, for a 0/1 outcome).
        rel_low, rel_high: bounds on the relative lift (``treatment / control - 1``); ``inf``
            when the control's lower bound is 0, NaN when its upper bound is 0.
        ci_low, ci_high: the ``1 - alpha`` confidence interval of the difference's bounds.
        rel_ci_low, rel_ci_high: the same for the relative lift.
        trimmed_share: ``p``, the share of the trimmed arm's selected units trimmed away.
        trimmed_arm: ``"treatment"`` or ``"control"``, the arm with the higher selection share.
    """

    diff_low: float
    diff_high: float
    rel_low: float
    rel_high: float
    ci_low: float
    ci_high: float
    rel_ci_low: float
    rel_ci_high: float
    trimmed_share: float
    trimmed_arm: str


def _ratio(num: float, den: float, empty: float) -> float:
    return num / den - 1 if den > 0 else empty


_State = tuple[bool, bool, bool]  # (trim the treatment arm, clip its low at 0, its high at 1)


def _state(r_t: float, z_t: float, r_c: float, z_c: float) -> _State:
    """Which arm is trimmed and which trimmed mean is clipped, at these shares."""
    q_t, q_c = r_t + z_t, r_c + z_c
    if q_t >= q_c:
        return True, 1 - z_t / q_c < 0, r_t / q_c > 1
    return False, 1 - z_c / q_t < 0, r_c / q_t > 1


def _bounds(
    r_t: float, z_t: float, r_c: float, z_c: float, state: _State | None = None
) -> tuple[float, float, float, float]:
    """(diff_low, diff_high, rel_low, rel_high) from the shares (module doc).

    ``state`` fixes the branch (:func:`_state`): the derivatives are those of the piece the
    estimate lies on (at equal selection shares: the treatment arm trimmed, as R's reference).
    """
    trim_t, clip_low, clip_high = state or _state(r_t, z_t, r_c, z_c)
    q_t, q_c = r_t + z_t, r_c + z_c
    if trim_t:  # trim the treatment arm's selected units
        low_t = 0.0 if clip_low else 1 - z_t / q_c
        high_t = 1.0 if clip_high else r_t / q_c
        y_c = r_c / q_c
        return (
            low_t - y_c,
            high_t - y_c,
            _ratio(low_t, y_c, math.nan),
            _ratio(high_t, y_c, math.nan),
        )
    low_c = 0.0 if clip_low else 1 - z_c / q_t
    high_c = 1.0 if clip_high else r_c / q_t
    y_t = r_t / q_t
    return (
        y_t - high_c,
        y_t - low_c,
        _ratio(y_t, high_c, math.nan),
        _ratio(y_t, low_c, math.inf),
    )


def _standard_errors(shares: list[float], n_t: int, n_c: int) -> list[float]:
    """Delta-method standard errors of the four bounds (multinomial shares per arm)."""
    state = _state(*shares)
    grads = []
    for i in range(4):
        up, down = list(shares), list(shares)
        up[i] += _STEP
        down[i] -= _STEP
        hi, lo = _bounds(*up, state=state), _bounds(*down, state=state)
        grads.append([(a - b) / (2 * _STEP) for a, b in zip(hi, lo, strict=True)])
    r_t, z_t, r_c, z_c = shares
    cov = [  # Var / Cov of (r_t, z_t, r_c, z_c): multinomial within an arm, arms independent
        [r_t * (1 - r_t) / n_t, -r_t * z_t / n_t, 0.0, 0.0],
        [-r_t * z_t / n_t, z_t * (1 - z_t) / n_t, 0.0, 0.0],
        [0.0, 0.0, r_c * (1 - r_c) / n_c, -r_c * z_c / n_c],
        [0.0, 0.0, -r_c * z_c / n_c, z_c * (1 - z_c) / n_c],
    ]
    out = []
    for k in range(4):
        g = [grads[i][k] for i in range(4)]
        var = sum(g[i] * cov[i][j] * g[j] for i in range(4) for j in range(4))
        out.append(math.sqrt(var) if math.isfinite(var) and var >= 0 else math.nan)
    return out


def _widen(bound: float, se: float) -> float:
    """A bound moved outward by ``se`` (signed); an infinite bound stays infinite."""
    return bound if math.isinf(bound) else bound + se


def lee_bounds_binary(
    yes_t: int,
    seen_t: int,
    n_t: int,
    yes_c: int,
    seen_c: int,
    n_c: int,
    alpha: float = 0.05,
) -> LeeBounds | None:
    """Lee bounds of a 0/1 outcome's effect, from counts per arm.

    ``n``: units; ``seen``: units whose outcome is observed (selected); ``yes``: observed with
    outcome 1. None when an arm has no unit or no observed unit, or every observed outcome is
    0 (or every one 1): no variance, no comparison, never "no difference".
    """
    if min(n_t, n_c, seen_t, seen_c) <= 0:
        return None
    if not (0 <= yes_t <= seen_t <= n_t and 0 <= yes_c <= seen_c <= n_c):
        raise ValueError("counts must satisfy 0 <= yes <= seen <= n in each arm")
    if yes_t + yes_c in (0, seen_t + seen_c):
        return None
    shares = [yes_t / n_t, (seen_t - yes_t) / n_t, yes_c / n_c, (seen_c - yes_c) / n_c]
    dl, dh, rl, rh = _bounds(*shares)
    se = _standard_errors(shares, n_t, n_c)
    q = NormalDist().inv_cdf(1 - alpha / 2)
    q_t, q_c = seen_t / n_t, seen_c / n_c
    return LeeBounds(
        diff_low=dl,
        diff_high=dh,
        rel_low=rl,
        rel_high=rh,
        ci_low=dl - q * se[0],
        ci_high=dh + q * se[1],
        rel_ci_low=_widen(rl, -q * se[2]),
        rel_ci_high=_widen(rh, q * se[3]),
        trimmed_share=1 - min(q_t, q_c) / max(q_t, q_c),
        trimmed_arm="treatment" if q_t >= q_c else "control",
    )
