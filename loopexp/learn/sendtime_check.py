"""How often the send-time recommendation is right: plan the slots' sample, simulate campaigns.

The check over many simulated campaigns (``bench/sendtime_recommendation.py``) draws sufficient
statistics (recipients and successes per segment x slot), not events, and runs
:func:`loopexp.learn.sendtime.analyze_send_time` on each.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from loopexp.design.plan import sample_size_per_variant
from loopexp.learn.sendtime import analyze_send_time


def planned_per_slot(
    baseline: float, mde_relative: float, n_slots: int, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Randomised recipients per slot in one segment to detect ``mde_relative``.

    Against the reference slot: ``n_slots - 1`` comparisons (the plan's Bonferroni split).
    """
    return sample_size_per_variant(baseline, mde_relative, alpha, power, n_slots - 1).per_variant


def simulate_slot_counts(
    rates: Mapping[str, Mapping[str, float]],
    n_per_slot: Mapping[str, int] | int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Sufficient statistics of a simulated send-time test: binomial successes per segment x slot.

    ``rates`` maps segment → slot → true rate of the primary metric.
    """
    rows = []
    for seg, by_slot in rates.items():
        n = n_per_slot if isinstance(n_per_slot, int) else n_per_slot[seg]
        for slot, p in by_slot.items():
            rows.append({"segment": seg, "slot": slot, "n": n, "successes": rng.binomial(n, p)})
    return pd.DataFrame(rows)


def recommendation_accuracy(
    rates: Mapping[str, Mapping[str, float]],
    n_per_slot: Mapping[str, int] | int,
    simulations: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Share of simulated campaigns whose recommendation is each segment's true best slot.

    ``__all__``: every segment right at once.
    """
    rng = np.random.default_rng(seed)
    truth = {seg: max(by_slot, key=by_slot.__getitem__) for seg, by_slot in rates.items()}
    slots = list(next(iter(rates.values())))
    hits = {seg: 0 for seg in rates} | {"__all__": 0}
    for _ in range(simulations):
        counts = simulate_slot_counts(rates, n_per_slot, rng)
        rec = analyze_send_time(counts, slots, with_intervals=False).recommended()
        right = [rec.get(seg) == best for seg, best in truth.items()]
        for seg, ok in zip(truth, right, strict=True):
            hits[seg] += ok
        hits["__all__"] += all(right)
    return {k: v / simulations for k, v in hits.items()}


__all__ = ["planned_per_slot", "recommendation_accuracy", "simulate_slot_counts"]
