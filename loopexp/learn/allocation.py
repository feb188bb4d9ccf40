"""Adaptive allocation for the next iteration: Thompson sampling (or top-two) weights.

The next spec's weights come from the last iteration's beta-binomial posterior of the primary
metric (the spec's Beta prior, as :mod:`loopexp.stats.bayes`), with

* the control's share fixed (default: its share in the last spec), so every challenger keeps a
  well-powered comparator and the guardrails keep their baseline;
* a floor per challenger (default 5 % of the audience), so no arm starves and the next
  iteration's test of it stays possible;
* new challengers (from the backlog, no data yet) get an equal share of the challengers' budget:
  a posterior they do not have cannot rank them.

The analysis stays valid under unequal weights: each iteration is analysed on its own, the SRM
check compares the assignment with the spec's weights (:meth:`ExperimentSpec.expected_shares`),
and loopexp never pools arms across iterations (their weights differ; a pooled estimate would need
per-iteration weighting and would mix populations mailed at different times).

When to use it: many challengers and a short campaign, where sending more of the audience to the
arms that look best earns more during the test. When not to: a clean read on one hypothesis (equal
weights give the most power per recipient for a fixed total), a metric that takes long to mature
(the posterior lags the truth), or when the per-arm estimates must be comparable at equal
precision (e.g. a factorial test).

Why our own code: no maintained library computes Thompson allocation probabilities for a handful of
beta posteriors with a fixed control share and floors; the Monte Carlo here is a few numpy lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loopexp.analysis.results import ExperimentResults
from loopexp.core.errors import InputError
from loopexp.design.spec import ExperimentSpec

#: Default smallest share of the audience any challenger gets.
DEFAULT_FLOOR = 0.05


class AllocationError(InputError):
    """The weights cannot be computed as asked (floors that do not fit, unknown metric)."""


def thompson_weights(
    spec: ExperimentSpec,
    results: ExperimentResults | None,
    arms: Sequence[str],
    control: str,
    floor: float = DEFAULT_FLOOR,
    control_share: float | None = None,
    top_two: bool = False,
    beta: float = 0.5,
    draws: int = 20_000,
    seed: int = 0,
) -> dict[str, float]:
    """Shares (summing to 1) for the next spec's ``arms``; ``control`` keeps ``control_share``.

    ``results`` is the last iteration (``spec``'s); an arm it has no data for is new. Thompson:
    each challenger's share of the challengers' budget is its posterior probability of being the
    best challenger; top-two (``top_two``): ``beta`` of that plus ``1 - beta`` times its
    probability of being the runner-up, which keeps sampling the close second (Russo, 2016).
    """
    challengers = [a for a in arms if a != control]
    if not challengers:
        raise AllocationError("no challenger to allocate")
    if control_share is None:
        weights = {v.id: v.weight for v in spec.variants}
        total = sum(weights.values())
        control_share = weights.get(control, total / len(weights)) / total
    budget = 1.0 - control_share
    if not 0 < control_share < 1 or floor * len(challengers) > budget + 1e-12:
        raise AllocationError(
            f"control share {control_share:.2f} and a floor of {floor:.2f} for "
            f"{len(challengers)} challenger(s) do not fit in the audience; lower the floor"
        )
    metric = spec.primary_metric
    prior = (spec.decision.prior.a, spec.decision.prior.b)
    observed = {}
    for v in results.variants if results is not None else []:
        value = v.metrics.get(metric)
        if value is not None and value.denominator > 0:
            observed[v.id] = (value.numerator, value.denominator)
    known = [a for a in challengers if a in observed]
    share = dict.fromkeys(challengers, budget / len(challengers))
    if len(known) >= 2:
        rng = np.random.default_rng(seed)
        samples = np.column_stack(
            [
                rng.beta(
                    prior[0] + observed[a][0], prior[1] + observed[a][1] - observed[a][0], draws
                )
                for a in known
            ]
        )
        order = np.argsort(-samples, axis=1)
        p_best = np.bincount(order[:, 0], minlength=len(known)) / draws
        probs = p_best
        if top_two:
            p_second = np.bincount(order[:, 1], minlength=len(known)) / draws
            probs = beta * p_best + (1 - beta) * p_second
        known_budget = budget * len(known) / len(challengers)
        for a, p in zip(known, probs, strict=True):
            share[a] = known_budget * float(p)
    share = _apply_floor(share, floor)
    out = {control: control_share, **share}
    return {a: out[a] for a in arms}


def _apply_floor(share: dict[str, float], floor: float) -> dict[str, float]:
    """Raise every share to ``floor``, taking the difference from the arms above it (same total)."""
    total = sum(share.values())
    fixed: dict[str, float] = {}
    free = dict(share)
    while True:
        low = [a for a, s in free.items() if s < floor]
        if not low:
            break
        for a in low:
            fixed[a] = floor
            del free[a]
        rest = total - sum(fixed.values())
        mass = sum(free.values())
        free = {a: (rest * s / mass if mass > 0 else rest / len(free)) for a, s in free.items()}
    return {a: fixed.get(a, free.get(a, floor)) for a in share}


__all__ = ["DEFAULT_FLOOR", "AllocationError", "thompson_weights"]
