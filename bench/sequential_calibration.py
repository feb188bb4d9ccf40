"""Calibration of daily looking: A/A false-ship rates and the power cost of always-valid results.

Simulates campaigns of a lifecycle flow whose recipients enrol evenly over ``days`` days, analysed
every morning on the cumulative data and stopped at the first "ship" (a challenger significantly
better than control on the primary metric after Holm's correction across challengers). Simulated at
the level of sufficient statistics (daily binomial counts per arm), which is all the analysis sees,
so 10,000 campaigns take seconds. Three rules are compared:

- ``sequential``: loopexp's always-valid p-values (asymptotic confidence sequence, tuned to the
  planned final sample), looked at daily;
- ``fixed_peeking``: the fixed-horizon pooled z-test looked at daily (what cron + fixed did);
- ``fixed_final``: the fixed-horizon test looked at once, at the planned final sample.

With ``--lift`` > 0 (the MDE, on the first challenger) the same run measures power: the share of
campaigns that ship the lifted challenger by the last day. Run:

    .venv/bin/python bench/sequential_calibration.py            # 10,000 campaigns, 2 and 3 arms

Writes bench/results/sequential_calibration.json and prints a Markdown table (committed as
bench/sequential_calibration.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from loopexp.sim.datasets import load_hillstrom  # noqa: E402
from loopexp.stats.adjustment import Moments, regression_adjusted  # noqa: E402
from loopexp.stats.sequential import always_valid_pvalues  # noqa: E402

ALPHA = 0.05


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis (vectorised ``multipletests(method="holm")``)."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    factors = m - np.arange(m)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(sorted_p * factors, axis=-1))
    out = np.empty_like(adjusted_sorted)
    np.put_along_axis(out, order, adjusted_sorted, axis=-1)
    return out


def simulate_looks(
    n_sims: int = 10_000,
    arms: int = 2,
    days: int = 14,
    n_per_arm_per_day: int = 1000,
    rate: float = 0.03,
    lift: float = 0.0,
    alpha: float = ALPHA,
    seed: int = 0,
) -> dict[str, float]:
    """Share of campaigns that ship a challenger, under each rule (see module docstring).

    Args:
        n_sims: campaigns simulated.
        arms: arms including the control.
        days: daily looks (enrolment is even over these days).
        n_per_arm_per_day: recipients entering each arm each day.
        rate: control conversion (or click) rate.
        lift: true relative lift of the first challenger (0 for A/A).
        alpha: the decision's alpha (two-sided; a ship needs the good direction).
        seed: numpy seed.

    Returns:
        ``sequential_ship``, ``fixed_peeking_ship``, ``fixed_final_ship`` (false ships under A/A;
        with ``lift`` the share shipping the lifted arm), ``*_any_significant`` (either direction,
        A/A only meaningful), and ``sequential_mean_stop_day`` among shipped campaigns.
    """
    rng = np.random.default_rng(seed)
    rates = np.full(arms, rate)
    rates[1] = rate * (1 + lift) if arms > 1 else rate
    daily = rng.binomial(n_per_arm_per_day, rates, size=(n_sims, days, arms))
    x = np.cumsum(daily, axis=1).astype(float)  # successes per look and arm
    looks = n_per_arm_per_day * np.arange(1, days + 1, dtype=float)
    n = np.broadcast_to(looks[None, :, None], x.shape)
    p = x / n
    p_c, p_t = p[..., :1], p[..., 1:]
    n_c, n_t = n[..., :1], n[..., 1:]
    diff = p_t - p_c
    se = np.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_seq = np.where(se > 0, diff / se, 0.0)
        pooled = (x[..., 1:] + x[..., :1]) / (n_t + n_c)
        se0 = np.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
        z_fix = np.where(se0 > 0, diff / se0, 0.0)
    tuning_n = 2 * days * n_per_arm_per_day  # the planned final sample of a comparison
    p_seq = holm(always_valid_pvalues(z_seq, n_t + n_c, tuning_n, alpha))
    p_fix = holm(2 * sps.norm.sf(np.abs(z_fix)))

    def ships(p_adj: np.ndarray) -> np.ndarray:
        win = (p_adj < alpha) & (diff > 0)
        if lift > 0:
            return win[..., 0]  # power: the lifted arm is the one shipped
        return win.any(axis=-1)

    def significant(p_adj: np.ndarray) -> np.ndarray:
        return (p_adj < alpha).any(axis=-1)

    seq_ship = ships(p_seq)
    first_day = np.where(seq_ship.any(axis=1), seq_ship.argmax(axis=1) + 1, 0)
    shipped_days = first_day[first_day > 0]
    return {
        "sequential_ship": float(seq_ship.any(axis=1).mean()),
        "fixed_peeking_ship": float(ships(p_fix).any(axis=1).mean()),
        "fixed_final_ship": float(ships(p_fix)[:, -1].mean()),
        "sequential_any_significant": float(significant(p_seq).any(axis=1).mean()),
        "fixed_peeking_any_significant": float(significant(p_fix).any(axis=1).mean()),
        "fixed_final_any_significant": float(significant(p_fix)[:, -1].mean()),
        "sequential_mean_stop_day": float(shipped_days.mean()) if shipped_days.size else math.nan,
    }


def simulate_adjusted_aa(
    n_sims: int = 4000, n_per_arm: int = 2000, mails_before: int = 12, seed: int = 0
) -> dict[str, float]:
    """A/A calibration of the regression-adjusted test on e-mail-like data.

    Each recipient has a persistent engagement level e ~ Beta(0.25, 2.5) (as in the simulator:
    most rarely click, a few click often); before the send they got ``mails_before`` mails and
    clicked each with probability e and opened with 3e (capped); after it they click with
    probability e. Covariates: pre-period clicks and opens. Returns the
    false-positive rate at alpha 0.05, the coverage of the 95% CI of the (zero) difference, and the
    mean CI narrowing against the unadjusted Welch interval.
    """
    rng = np.random.default_rng(seed)
    rejections = covered = 0
    narrowing = []
    for _ in range(n_sims):
        arms = []
        for _arm in range(2):
            e = rng.beta(0.25, 2.5, n_per_arm)
            clicks = rng.binomial(mails_before, e)
            opens = rng.binomial(mails_before, np.minimum(3 * e, 1.0))
            y = (rng.random(n_per_arm) < e).astype(float)
            arms.append(Moments.from_arrays(y, np.column_stack([clicks, opens])))
        out = regression_adjusted(arms[1], arms[0], ALPHA)
        rejections += out.effect.p_value < ALPHA
        covered += out.effect.ci_low <= 0 <= out.effect.ci_high
        narrowing.append(out.ci_narrowing)
    return {
        "sims": n_sims,
        "n_per_arm": n_per_arm,
        "false_positive_rate": rejections / n_sims,
        "coverage_95": covered / n_sims,
        "mean_ci_narrowing": float(np.mean(narrowing)),
    }


def hillstrom_narrowing() -> list[dict[str, float | str]]:
    """CI narrowing of the adjusted e-mail-vs-no-e-mail comparisons on Hillstrom.

    Covariates: ``history`` (last year's spend) and the ``mens``, ``womens``, ``newbie`` flags;
    moments aggregated in DuckDB.
    """
    frame = load_hillstrom()
    frame["segment"] = frame["segment"].astype(str)
    covs = ["history", "mens", "womens", "newbie"]
    out = []
    with duckdb.connect() as con:
        con.register("h", frame)
        for outcome in ("visit", "conversion", "spend"):
            cols = ["count(*)", f"sum({outcome})::DOUBLE", f"sum({outcome}::DOUBLE * {outcome})"]
            cols += [f"sum({c})::DOUBLE" for c in covs]
            cols += [f"sum({a}::DOUBLE * {b})" for a in covs for b in covs]
            cols += [f"sum({c}::DOUBLE * {outcome})" for c in covs]
            query = f"SELECT {', '.join(cols)} FROM h WHERE segment = ?"
            k = len(covs)
            moments = {}
            for arm in ("Mens E-Mail", "Womens E-Mail", "No E-Mail"):
                r = con.execute(query, [arm]).fetchone()
                moments[arm] = Moments.from_sums(
                    r[0], r[1], r[2], r[3 : 3 + k], r[3 + k : 3 + k + k * k], r[3 + k + k * k :]
                )
            for arm in ("Mens E-Mail", "Womens E-Mail"):
                adj = regression_adjusted(moments[arm], moments["No E-Mail"])
                out.append(
                    {
                        "outcome": outcome,
                        "arm": arm,
                        "estimate": adj.effect.estimate,
                        "se_adjusted": adj.se,
                        "se_unadjusted": adj.se_unadjusted,
                        "ci_narrowing": adj.ci_narrowing,
                    }
                )
    return out


def n_for_power(rate: float, lift: float, alpha: float, power: float, arms: int) -> int:
    """Per-arm final n giving the fixed-horizon test ``power`` (Bonferroni share for >2 arms)."""
    h = proportion_effectsize(rate * (1 + lift), rate)
    a = alpha / max(arms - 1, 1)
    return math.ceil(NormalIndPower().solve_power(h, alpha=a, power=power, alternative="two-sided"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rate", type=float, default=0.03)
    parser.add_argument("--mde", type=float, default=0.10)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/sequential_calibration.json"
    )
    args = parser.parse_args()

    rows = []
    started = time.perf_counter()
    for arms in (2, 3):
        n_final = n_for_power(args.rate, args.mde, ALPHA, 0.8, arms)
        per_day = math.ceil(n_final / args.days)
        common = {"n_sims": args.sims, "arms": arms, "days": args.days, "rate": args.rate}
        aa = simulate_looks(**common, n_per_arm_per_day=per_day, lift=0.0, seed=100 + arms)
        ab = simulate_looks(**common, n_per_arm_per_day=per_day, lift=args.mde, seed=200 + arms)
        # What it takes to get the fixed-horizon power back: let the flow run twice as long.
        longer = {**common, "days": 2 * args.days, "n_per_arm_per_day": per_day}
        ab2 = simulate_looks(**longer, lift=args.mde, seed=300 + arms)
        aa2 = simulate_looks(**longer, lift=0.0, seed=400 + arms)
        rows.append(
            {
                "arms": arms,
                "n_per_arm_final": per_day * args.days,
                "aa": aa,
                "power": ab,
                "aa_double_duration": aa2,
                "power_double_duration": ab2,
            }
        )
    adjusted = simulate_adjusted_aa(n_sims=min(args.sims, 4000), seed=7)
    hillstrom = hillstrom_narrowing()
    elapsed = time.perf_counter() - started
    result = {
        "alpha": ALPHA,
        "sims": args.sims,
        "days": args.days,
        "rate": args.rate,
        "mde": args.mde,
        "rows": rows,
        "adjusted_aa": adjusted,
        "hillstrom_adjustment": hillstrom,
        "seconds": elapsed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    se = math.sqrt(0.025 * 0.975 / args.sims)
    print(
        f"# Daily looks: {args.sims:,} campaigns x {args.days} looks, alpha {ALPHA}, "
        f"control rate {args.rate:.0%}, MDE {args.mde:.0%} (one simulation SE at 2.5%: "
        f"{se:.2%})\n"
    )
    print(
        "| arms | final n/arm | rule | A/A false ship | A/A significant (either way) |"
        " power at MDE (ship by last day) |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for row in rows:
        for rule in ("sequential", "fixed_peeking", "fixed_final"):
            print(
                f"| {row['arms']} | {row['n_per_arm_final']:,} | {rule} | "
                f"{row['aa'][rule + '_ship']:.2%} | {row['aa'][rule + '_any_significant']:.2%} | "
                f"{row['power'][rule + '_ship']:.1%} |"
            )
    for row in rows:
        print(
            f"\n{row['arms']} arms: sequential power {row['power']['sequential_ship']:.1%} vs "
            f"fixed-horizon {row['power']['fixed_final_ship']:.1%} at the same final n; "
            f"mean stopping day of sequential ships "
            f"{row['power']['sequential_mean_stop_day']:.1f} of {args.days}. Run twice as "
            f"long (up to {2 * row['n_per_arm_final']:,}/arm, same daily looks), sequential "
            f"power is {row['power_double_duration']['sequential_ship']:.1%} (mean stop day "
            f"{row['power_double_duration']['sequential_mean_stop_day']:.1f}), A/A false "
            f"ship {row['aa_double_duration']['sequential_ship']:.2%}."
        )
    print("\n# Regression-adjusted test, A/A (fixed horizon, simulated e-mail engagement)\n")
    print(
        f"{adjusted['sims']:,} A/A pairs of {adjusted['n_per_arm']:,}/arm, covariates pre-period "
        f"clicks and opens: false-positive rate {adjusted['false_positive_rate']:.2%} (alpha 5%), "
        f"95% CI coverage {adjusted['coverage_95']:.2%}, mean CI narrowing "
        f"{adjusted['mean_ci_narrowing']:.1%} against Welch."
    )
    print("\n# Hillstrom: e-mail vs no e-mail, adjusted on history + mens/womens/newbie flags\n")
    print("| outcome | arm | estimate | SE adjusted | SE unadjusted | CI narrowing |")
    print("|---|---|---:|---:|---:|---:|")
    for h in hillstrom:
        print(
            f"| {h['outcome']} | {h['arm']} | {h['estimate']:.6f} | {h['se_adjusted']:.6g} | "
            f"{h['se_unadjusted']:.6g} | {h['ci_narrowing']:.2%} |"
        )
    print(f"\n({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
