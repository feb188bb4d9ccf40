"""A/A false ships of a fixed-horizon one-off send's single final read: calibration or noise?

``bench/maturity_peeking.py`` measured 2.87 % A/A false ships (3,000 sends, 95 % interval
2.3-3.5 %) for the fixed read against α/2 = 2.5 %. The read time turns the cron's 28 looks into
one read, so what is left is that read's own calibration. This bench separates its parts:

1. **Exact** (no Monte-Carlo error): the one-sided size of the click test the decision reads (the
   pooled score z-test, :func:`loopexp.stats.score.score_test`; a ship needs p < α and a
   positive difference; Holm with one challenger changes nothing) summed over the binomial grid
   of both arms' click counts, at the demo's matured rates and at ``bench/calibration.md``'s A/A
   row; and the unsubscribe guardrail's veto probability the same way.
2. **Direct simulation** of that single final read through
   :func:`loopexp.analysis.analyze.analyze` (the decision code of ``loopexp run``): binomial
   delivered, click and unsubscribe counts per arm, many replicates, with the Monte-Carlo error.
3. **The cron path's pools**: maturity_peeking draws each A/A send's control from the simulated
   A/A send's control arm and its challenger from the other arm. Those two arms of ~100,000 are
   one random split, so their matured click rates differ by chance; every replicated send
   inherits that same difference. The exact rate at the pools' own rates predicts what the cron
   path measured.

Run (40,000 reads: ~15 min on 2 loaded cores; the exact part alone takes seconds):

    .venv/bin/python bench/aa_final_read.py --reps 40000

Writes bench/results/aa_final_read.json and prints the figures (in bench/README.md).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from scipy import stats as sps

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "bench"):  # run as a script from anywhere
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from maturity_peeking import SENT, make_rules, pools, write_result  # noqa: E402

from loopexp import load_spec  # noqa: E402
from loopexp.analysis.analyze import analyze  # noqa: E402
from loopexp.analysis.results import Status  # noqa: E402
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats, MetricTable  # noqa: E402
from loopexp.stats.score import score_test  # noqa: E402

N_ASSIGNED = 4000  # per arm, as in maturity_peeking's A/A sends
FINAL_H = 72.0


def _support(n: int, p: float) -> np.ndarray:
    lo, hi = sps.binom.ppf([1e-13, 1 - 1e-13], n, p)
    return np.arange(int(lo), int(hi) + 1)


def exact_upper_rejection(n_t: int, p_t: float, n_c: int, p_c: float, alpha: float) -> float:
    """P(pooled score test p < alpha and x_t/n_t > x_c/n_c), both counts binomial: exact.

    The grid leaves out less than 1e-12 of probability. The vectorised z equals
    :func:`score_test` (checked on grid points below), so this is the decision's own test.
    """
    xt, xc = _support(n_t, p_t), _support(n_c, p_c)
    wt, wc = sps.binom.pmf(xt, n_t, p_t), sps.binom.pmf(xc, n_c, p_c)
    gt, gc = np.meshgrid(xt, xc, indexing="ij")
    pool = (gt + gc) / (n_t + n_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (gt / n_t - gc / n_c) / np.sqrt(pool * (1 - pool) * (1 / n_t + 1 / n_c))
    z = np.where((pool > 0) & (pool < 1), z, 0.0)  # no events (or all): no evidence, z = 0
    for i, j in ((0, 0), (len(xt) // 2, len(xc) // 3), (len(xt) - 1, len(xc) // 2)):
        ref, _ = score_test(float(xt[i]), n_t, float(xc[j]), n_c)
        assert abs(ref - z[i, j]) < 1e-9, (ref, z[i, j])
    reject = (2 * sps.norm.sf(np.abs(z)) < alpha) & (z > 0)
    return float(wt @ reject @ wc)


def _table(n_del: dict[str, int], clicks: dict[str, int], unsubs: dict[str, int]) -> MetricTable:
    stats = [
        GroupStats("click_rate", v, ALL_SEGMENTS, n_del[v], clicks[v], clicks[v]) for v in n_del
    ]
    stats += [
        GroupStats("unsubscribe_rate", v, ALL_SEGMENTS, n_del[v], unsubs[v], unsubs[v])
        for v in n_del
    ]
    return MetricTable(
        stats, dict.fromkeys(n_del, N_ASSIGNED), 0, 0, last_sent_at=SENT, censored_at=None
    )


def direct(spec, reps: int, rates: dict[str, float], seed: int) -> dict[str, float]:
    """The single final read, ``reps`` A/A sends through ``analyze``: the share shipped."""
    rng = np.random.default_rng(seed)
    at = SENT + timedelta(hours=FINAL_H + 8)
    arms = [v.id for v in spec.variants]
    ships = 0
    for _ in range(reps):
        n_del = {v: int(rng.binomial(N_ASSIGNED, rates["delivered"])) for v in arms}
        clicks = {v: int(rng.binomial(n_del[v], rates["click"])) for v in arms}
        unsubs = {v: int(rng.binomial(n_del[v], rates["unsub"])) for v in arms}
        d = analyze(spec, _table(n_del, clicks, unsubs), as_of=at).decision
        ships += d.status == Status.SHIP
    p = ships / reps
    return {
        "reps": reps,
        "false_ship": p,
        "mc_error": math.sqrt(p * (1 - p) / reps),
        "ci95": [
            p - 1.96 * math.sqrt(p * (1 - p) / reps),
            p + 1.96 * math.sqrt(p * (1 - p) / reps),
        ],
    }


def pool_rates(fixed, seed: int) -> dict[str, dict[str, float]]:
    """Matured (72 h) delivered share, click and unsubscribe rates of each arm of the A/A pool."""
    aa, _ = pools(fixed, 200_000, None, seed)
    out = {}
    for arm, p in aa.items():
        d = p.delivered <= FINAL_H
        out[arm] = {
            "recipients": len(p.keys),
            "delivered": float(d.mean()),
            "click": float(((p.click <= FINAL_H) & d).sum() / d.sum()),
            "unsub": float(((p.unsub <= FINAL_H) & d).sum() / d.sum()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=28)
    args = parser.parse_args()
    started = time.time()
    demo = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    fixed = make_rules(demo, N_ASSIGNED)["fixed"]
    alpha = fixed.decision.alpha
    arms = pool_rates(fixed, args.seed)  # the cron path's A/A pools (same seed as its bench)
    c, t = arms["control"], arms["personal"]
    total = c["recipients"] + t["recipients"]
    both = {
        k: (c[k] * c["recipients"] + t[k] * t["recipients"]) / total
        for k in ("delivered", "click", "unsub")
    }
    n = round(N_ASSIGNED * both["delivered"])
    exact = {
        "demo_rates_equal_arms": exact_upper_rejection(n, both["click"], n, both["click"], alpha),
        "calibration_md_5000_at_4pct": exact_upper_rejection(5000, 0.04, 5000, 0.04, alpha),
        "guardrail_veto_equal_arms": exact_upper_rejection(
            n, both["unsub"], n, both["unsub"], alpha
        ),
    }
    exact["demo_with_guardrail"] = exact["demo_rates_equal_arms"] * (
        1 - exact["guardrail_veto_equal_arms"]
    )
    nt, nc = round(N_ASSIGNED * t["delivered"]), round(N_ASSIGNED * c["delivered"])
    ship_pool = exact_upper_rejection(nt, t["click"], nc, c["click"], alpha)
    veto_pool = exact_upper_rejection(nt, t["unsub"], nc, c["unsub"], alpha)
    cron = {
        "pool_arms": arms,
        "pool_click_rel_diff": t["click"] / c["click"] - 1,
        "pool_unsub_rel_diff": t["unsub"] / c["unsub"] - 1,
        "predicted_false_ship": ship_pool * (1 - veto_pool),
        "predicted_note": "binomial draws at each pool arm's rates (no finite-pool correction)",
    }
    sim = direct(fixed, args.reps, both, args.seed)
    result = {
        "alpha_half": alpha / 2,
        "n_delivered_per_arm": n,
        "rates": both,
        "exact": exact,
        "direct_simulation": sim,
        "cron_pools": cron,
        "seconds": round(time.time() - started, 1),
        "load_average": os.getloadavg(),
    }
    write_result("aa_final_read", result)


if __name__ == "__main__":
    main()
