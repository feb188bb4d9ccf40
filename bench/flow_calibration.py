"""Calibration of flow tests by simulation: false winners, power, interval coverage, naive bias.

Entries arrive over time (:func:`loopexp.sim.flows.draw_flow_outcomes`); each arm's true
probability of converting within W = 7 days is known, and the control waits 3 days before its
reminder, so it converts *later* than the challenger (1 day) — the case the naive "conversions
so far" count gets wrong. Every estimate goes through the package's own functions
(:func:`loopexp.stats.survival.window_times`, ``km_window_rate``, ``window_difference``; plan by
:func:`loopexp.design.flow_plan.plan_flow`). Checks (issue 26's "Done when"):

1. A/A (equal W-day rates, different timing), entries over 14 days, 14 daily looks with the
   always-valid test: a false winner shipped in at most alpha / 2 of the runs.
2. Power: true lift = the MDE, entries over the planned days, daily looks until the planned day
   (entry days + W): ships in the planned 80 % +- 3 pp.
3. Coverage: at a look on day 10 (a third of the recipients still inside their window), the 95 %
   Kaplan–Meier interval of the difference covers the true W-day effect 93–97 %; the naive count's
   bias, and the matured cohort's, beside it.

Run: ``python bench/flow_calibration.py [--reps-aa 1000 --reps-power 1000 --reps-cover 2000]``;
writes the table to stdout (bench/flow_calibration.md keeps a run). Monte-Carlo standard errors
are printed beside each rate.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from loopexp.design.flow_plan import plan_flow
from loopexp.sim.flows import draw_flow_outcomes
from loopexp.stats.sequential import tuning_n_for_plan
from loopexp.stats.survival import km_window_rate, window_difference, window_times

W = 7.0
BASE = 0.08
MDE = 0.25
ALPHA = 0.05
RATE = 1000.0  # entries per day
NUDGE = np.array([3.0, 1.0])  # control: reminder after 3 days; challenger: after 1 day
SHARES = np.array([0.5, 0.5])


def _look(arm: np.ndarray, entry: np.ndarray, t: np.ndarray, day: float, tuning: float):
    """KM difference (challenger - control) at a look on ``day``, with the naive and matured."""
    seen = entry < day
    follow = day - entry[seen]
    rates, naive, naive_var, matured = [], [], [], []
    for k in (0, 1):
        m = arm[seen] == k
        tk, fk = t[seen][m], follow[m]
        duration, event = window_times(tk, fk, W)
        rates.append(km_window_rate(duration, event, W))
        so_far = np.mean(np.isfinite(tk) & (tk <= fk)) if tk.size else math.nan
        naive.append(so_far)
        naive_var.append(so_far * (1 - so_far) / max(tk.size, 1))
        ok = fk >= W
        matured.append(np.mean(np.isfinite(tk[ok]) & (tk[ok] <= W)) if ok.any() else math.nan)
    seq = window_difference(rates[1], rates[0], ALPHA, True, tuning, ALPHA)
    fixed = window_difference(rates[1], rates[0], ALPHA, False)
    # what a dashboard does: conversions so far per entered recipient, a z-test at every look
    naive_z = (naive[1] - naive[0]) / math.sqrt(sum(naive_var)) if sum(naive_var) > 0 else 0.0
    return seq, fixed, naive[1] - naive[0], matured[1] - matured[0], naive_z


def _ships(seq) -> bool:
    return seq.p_value < ALPHA and seq.estimate > 0


def aa(reps: int, tuning: float, rng: np.random.Generator) -> dict[str, float]:
    """Equal W-day rates; 14 daily looks over 14 days of entries."""
    n = int(RATE * 14)
    ship = naive_ship = 0
    at_day9: list[tuple[float, float]] = []  # (KM, naive) difference, 1-day arm minus control
    for _ in range(reps):
        arm, entry, t = draw_flow_outcomes(rng, n, SHARES, np.array([BASE, BASE]), NUDGE, W, 14)
        shipped = naive_shipped = False
        for day in range(1, 15):
            seq, fixed, naive, _matured, naive_z = _look(arm, entry, t, float(day), tuning)
            shipped |= _ships(seq)
            naive_shipped |= naive_z > 1.959964
            if day == 9:
                at_day9.append((fixed.estimate, naive))
        ship += shipped
        naive_ship += naive_shipped
    km_lift, naive_diff = np.nanmean(np.array(at_day9), axis=0)
    return {
        "false_winner": ship / reps,
        "naive_false_winner": naive_ship / reps,
        "km_diff_day9": float(km_lift),
        "naive_diff_day9": float(naive_diff),
    }


def power(reps: int, tuning: float, entry_days: float, rng: np.random.Generator) -> dict:
    """True lift = MDE; daily looks until entry days + W."""
    n = int(RATE * entry_days)
    rates = np.array([BASE, BASE * (1 + MDE)])
    looks = np.arange(1.0, math.ceil(entry_days + W) + 1)
    ever = final = 0
    for _ in range(reps):
        arm, entry, t = draw_flow_outcomes(rng, n, SHARES, rates, NUDGE, W, entry_days)
        hit = False
        for day in looks:
            seq, *_ = _look(arm, entry, t, day, tuning)
            hit |= _ships(seq)
        ever += hit
        final += _ships(seq)
    return {"power": ever / reps, "power_final_look": final / reps}


def coverage(reps: int, tuning: float, rng: np.random.Generator) -> dict[str, float]:
    """One look on day 10 of 14 entry days: KM 95 % interval coverage of the true effect."""
    truth = BASE * (1 + MDE) - BASE
    n = int(RATE * 14)
    rates = np.array([BASE, BASE * (1 + MDE)])
    cover = cover_seq = 0
    est, naive, matured = [], [], []
    for _ in range(reps):
        arm, entry, t = draw_flow_outcomes(rng, n, SHARES, rates, NUDGE, W, 14)
        seq, fixed, nv, mt, _z = _look(arm, entry, t, 10.0, tuning)
        cover += fixed.ci_low <= truth <= fixed.ci_high
        cover_seq += seq.ci_low <= truth <= seq.ci_high
        est.append(fixed.estimate)
        naive.append(nv)
        matured.append(mt)
    return {
        "truth": truth,
        "coverage": cover / reps,
        "coverage_sequence": cover_seq / reps,
        "km_mean": float(np.mean(est)),
        "naive_mean": float(np.mean(naive)),
        "matured_mean": float(np.mean(matured)),
        "km_sd": float(np.std(est)),
        "matured_sd": float(np.std(matured)),
    }


def _mc(p: float, reps: int) -> str:
    return f"{p:.1%} (MC SE {math.sqrt(p * (1 - p) / reps):.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps-aa", type=int, default=1000)
    parser.add_argument("--reps-power", type=int, default=1000)
    parser.add_argument("--reps-cover", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    plan = plan_flow(BASE, MDE, RATE, W, ALPHA, 0.8)
    tuning = tuning_n_for_plan(plan.per_arm)
    print(f"load average before: {os.getloadavg()}")
    print(
        f"plan: {plan.per_arm:,} per arm, {plan.entry_days:.1f} entry days + {W:g} = "
        f"{plan.days:.1f} days (baseline {BASE:.0%}, MDE {MDE:.0%}, {RATE:g} entries a day)"
    )
    started = time.monotonic()
    a = aa(args.reps_aa, tuning, rng)
    t_aa = time.monotonic() - started
    p = power(args.reps_power, tuning, plan.entry_days, rng)
    t_power = time.monotonic() - started - t_aa
    c = coverage(args.reps_cover, tuning, rng)
    t_cover = time.monotonic() - started - t_aa - t_power
    print(f"load average after: {os.getloadavg()}")
    print("\n| check | result | target | reps | seconds |\n|---|---|---|---|---|")
    print(
        f"| A/A, 14 daily looks: false winner | {_mc(a['false_winner'], args.reps_aa)} | "
        f"<= {ALPHA / 2:.1%} | {args.reps_aa} | {t_aa:.0f} |"
    )
    print(
        f"| A/A, naive 'conversions so far' z-test read daily: false winner | "
        f"{_mc(a['naive_false_winner'], args.reps_aa)} | (shown) | {args.reps_aa} | |"
    )
    print(
        f"| power at the MDE, daily looks to day {plan.days:.0f} | "
        f"{_mc(p['power'], args.reps_power)} | 80% +- 3 pp | {args.reps_power} | {t_power:.0f} |"
    )
    print(f"| power, last look only | {_mc(p['power_final_look'], args.reps_power)} | | | |")
    print(
        f"| KM 95% interval covers the true W-day effect (day 10) | "
        f"{_mc(c['coverage'], args.reps_cover)} | 93-97% | {args.reps_cover} | {t_cover:.0f} |"
    )
    seq_cover = _mc(c["coverage_sequence"], args.reps_cover)
    print(f"| always-valid sequence covers it (day 10) | {seq_cover} | >= 95% | | |")
    print(
        f"\nA/A (both arms {BASE:.0%} by day {W:g}; control's reminder on day 3, challenger's on "
        f"day 1), look on day 9: mean difference (challenger - control) by KM "
        f"{a['km_diff_day9']:+.4f} "
        f"(truth 0), by the naive count {a['naive_diff_day9']:+.4f} "
        "(the later-converting control looks worse)"
    )
    print(
        f"\nDay 10, true effect {c['truth']:+.4f}: KM mean {c['km_mean']:+.4f} (sd "
        f"{c['km_sd']:.4f}); matured cohort mean {c['matured_mean']:+.4f} (sd "
        f"{c['matured_sd']:.4f}); naive 'conversions so far' mean {c['naive_mean']:+.4f} "
        f"(bias {c['naive_mean'] - c['truth']:+.4f})"
    )


if __name__ == "__main__":
    main()
