"""Opens after Apple Mail Privacy Protection (issue 28): bias, coverage and bounds by simulation.

Each replicate simulates one A/B send of ``--n`` recipients per arm: half are Apple proxy readers
(latent). Before the send, 80 % of proxy readers are seen as ``proxy`` (earlier machine opens
only) and 70 % of non-proxy readers as ``non_proxy`` (an earlier human open); the rest are
``unknown``. True human open rate 20 % in control, +10 % relative (22 %) in the challenger, for
both kinds of reader; the proxy fires a machine open for 90 % of proxy readers in either arm
(a non-proxy reader's scanner 2 %) and hides their human opens. Every replicate goes through
:func:`loopexp.analysis.opens.analyze_opens`, the function ``loopexp`` reports with.

    .venv/bin/python bench/mpp_bounds.py --reps 2000 --n 10000

Prints the raw (any-open) lift, the non-proxy estimate's mean and 95 % CI coverage of +10 % with
its Monte-Carlo error, how often the worst-case bounds contain the whole-audience truth, and the
same for the Lee bounds (the estimated bounds, and their 95 % confidence interval) with widths.
Here Apple readers read like the others, so Lee's whole-audience assumption holds; the proxy
readers without a prefetch (10 %) who read are counted as not reading (the bounds' "no open: not
read"), which pulls the Lee bounds slightly toward 0.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import pandas as pd

from loopexp.analysis.opens import analyze_opens

P_CONTROL, LIFT, PROXY_SHARE = 0.20, 0.10, 0.5
SEEN_PROXY, SEEN_NON_PROXY, PREFETCH, SCANNER = 0.8, 0.7, 0.9, 0.02


def simulate(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """One send: per recipient variant, pre-send reader class, observed human and machine opens."""
    variant = np.repeat(np.array(["A", "B"]), n)
    proxy = rng.random(2 * n) < PROXY_SHARE
    seen = rng.random(2 * n) < np.where(proxy, SEEN_PROXY, SEEN_NON_PROXY)
    reader = np.where(seen, np.where(proxy, "proxy", "non_proxy"), "unknown")
    rate = np.where(variant == "B", P_CONTROL * (1 + LIFT), P_CONTROL)
    read = rng.random(2 * n) < rate  # true human opens, hidden for proxy readers
    machine = rng.random(2 * n) < np.where(proxy, PREFETCH, SCANNER)
    return pd.DataFrame(
        {
            "variant": variant,
            "reader_class": reader,
            "human_opens": (read & ~proxy).astype(int),
            "machine_opens": machine.astype(int),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--n", type=int, default=10000, help="recipients per arm")
    parser.add_argument("--seed", type=int, default=28)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    true_diff = P_CONTROL * LIFT  # whole audience, true human opens (both reader kinds)
    raw, est, cover, inside, masked, width = [], [], 0, 0, [], []
    lee_in, lee_ci_in, lee_width, lee_ci_width, lee_none = 0, 0, [], [], 0
    start = time.perf_counter()
    for _ in range(args.reps):
        frame = simulate(rng, args.n)
        any_open = (frame["human_opens"] + frame["machine_opens"]) > 0
        rates = any_open.groupby(frame["variant"]).mean()
        raw.append(rates["B"] / rates["A"] - 1)
        (b,) = analyze_opens(frame, "A").challengers
        est.append(b.non_proxy.rel_lift)
        cover += b.non_proxy.rel_ci_low <= LIFT <= b.non_proxy.rel_ci_high
        inside += b.bounds.diff_low <= true_diff <= b.bounds.diff_high
        masked.append(b.bounds.masked_share)
        width.append(b.bounds.diff_high - b.bounds.diff_low)
        if b.lee is None:
            lee_none += 1
            continue
        lee_in += b.lee.diff_low <= true_diff <= b.lee.diff_high
        lee_ci_in += b.lee.ci_low <= true_diff <= b.lee.ci_high
        lee_width.append(b.lee.diff_high - b.lee.diff_low)
        lee_ci_width.append(b.lee.ci_high - b.lee.ci_low)
    wall = time.perf_counter() - start
    c = cover / args.reps
    print(f"reps {args.reps}, {args.n}/arm, wall {wall:.0f} s, load {os.getloadavg()}")
    print(f"raw any-open lift: mean {np.mean(raw):+.4f} (truth for human opens {LIFT:+.2f})")
    print(f"non-proxy rel_lift: mean {np.mean(est):+.4f}, sd {np.std(est):.4f}")
    print(
        f"non-proxy 95% CI covers +10%: {c:.4f} (MC error {math.sqrt(c * (1 - c) / args.reps):.4f})"
    )
    print(
        f"worst-case bounds contain the whole-audience truth {true_diff:+.3f}: "
        f"{inside / args.reps:.4f}; mean width {np.mean(width):.3f}, "
        f"masked share {np.mean(masked):.3f}"
    )
    k = lee_ci_in / args.reps
    print(
        f"Lee bounds contain the truth: {lee_in / args.reps:.4f}, mean width "
        f"{np.mean(lee_width):.4f}; their 95% CI contains it: {k:.4f} (MC error "
        f"{math.sqrt(k * (1 - k) / args.reps):.4f}), mean width {np.mean(lee_ci_width):.4f}; "
        f"no Lee bounds in {lee_none} replicates"
    )


if __name__ == "__main__":
    main()
