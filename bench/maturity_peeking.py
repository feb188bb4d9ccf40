"""A one-off send read by a morning cron every 6 hours for 7 days: false winners and power.

The issue (28): the demo's one-off send, read 2 hours after sending, already shipped; a scheduled
run reads it again and again. With maturity windows and the read time of a fixed-horizon one-off
send (:mod:`loopexp.analysis.maturity`), each look before the final read says keep testing and
each later one reads the matured outcomes. This bench measures, over A/A sends, the share that
ship a (false) winner at any of the 28 looks (6 h, 12 h, ..., 168 h), and over sends with a true
effect the share found at the final read, against the planned power.

How it stays cheap: recipients come from the loopexp simulator (two large simulated sends, one
A/A, one with the true effect: the pools); each replicated send draws its recipients from the
pools and assigns them at random. The sufficient statistics of each look (delivered, human clicks
and unsubscribes per arm, immature recipients censored exactly as the engine does) are counted in
numpy and checked equal to ``compute_metrics(..., as_of=look)`` on the first replicates; then
``analyze(spec, table, as_of=look)``, the decision code of ``loopexp run``, decides every look.
Three rules side by side on the same sends:

- ``before``: what loopexp did before issue 28 (no censoring, no read time);
- ``fixed``: the fixed-horizon test with the read time (the default of a one-off send);
- ``sequential``: always-valid results, read at every look on matured recipients only.

Run (a few minutes):

    .venv/bin/python bench/maturity_peeking.py --aa 1000 --power 400

Writes bench/results/maturity_peeking.json and prints a Markdown table (in bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from loopexp import load_spec, simulate_campaign  # noqa: E402
from loopexp.analysis.analyze import analyze  # noqa: E402
from loopexp.analysis.results import Status  # noqa: E402
from loopexp.design.plan import sample_size_per_variant  # noqa: E402
from loopexp.metrics.definitions import maturity_hours  # noqa: E402
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats, MetricTable, compute_metrics  # noqa: E402
from loopexp.sim.simulate import TrueEffects  # noqa: E402

SENT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LOOKS_H = np.arange(6, 169, 6)  # every 6 hours for 7 days: 28 looks
INF = np.inf


@dataclass
class Pool:
    """Per-recipient times (hours after SENT; inf: never) of one arm of a simulated send."""

    keys: np.ndarray
    sent: np.ndarray
    delivered: np.ndarray
    click: np.ndarray
    unsub: np.ndarray


def _first(events: pd.DataFrame, keys: pd.Index, mask: pd.Series) -> np.ndarray:
    hours = (events.loc[mask, "ts"] - pd.Timestamp(SENT)).dt.total_seconds() / 3600
    first = hours.groupby(events.loc[mask, "recipient_key"]).min()
    return first.reindex(keys).fillna(INF).to_numpy()


def pools(
    spec, n: int, effects: TrueEffects | None, seed: int
) -> tuple[dict[str, Pool], pd.DataFrame]:
    """Simulate one send of ``n`` recipients; per arm, each recipient's event times."""
    sim = simulate_campaign(spec, n, effects, seed=seed, send_at=SENT)
    e = sim.events
    out = {}
    for arm, group in sim.assignment.groupby("variant_id"):
        keys = pd.Index(group["recipient_key"])
        t = e["event_type"]
        out[arm] = Pool(
            keys.to_numpy(),
            _first(e, keys, t.isin(["send", "delivered"])),
            _first(e, keys, t == "delivered"),
            _first(e, keys, (t == "click") & (e["is_bot_click"] != True)),  # noqa: E712
            _first(e, keys, t == "unsubscribe"),
        )
    return out, e


def _table(
    spec, arms: dict[str, Pool], look: float, censor: bool, metrics: list[str]
) -> MetricTable:
    """The engine's statistics of one look (see ``check_against_engine``)."""
    seen_sent = np.concatenate([p.sent[p.sent <= look] for p in arms.values()])
    last = seen_sent.max() if seen_sent.size else None
    stats = []
    outcome = {"click_rate": "click", "unsubscribe_rate": "unsub"}
    for name in metrics:
        window = maturity_hours(spec.metric(name))
        for arm, p in arms.items():
            sent = np.where(p.sent <= look, p.sent, last if last is not None else 0.0)
            pop = p.delivered <= look
            if censor:
                pop &= sent <= look - window
            y = (getattr(p, outcome[name]) <= look) & pop
            k = float(y.sum())
            stats.append(GroupStats(name, arm, ALL_SEGMENTS, int(pop.sum()), k, k))
    sent_at = None if last is None else SENT + timedelta(hours=float(last))
    return MetricTable(
        stats=stats,
        assigned={arm: len(p.keys) for arm, p in arms.items()},
        events=0,
        quarantined=0,
        last_sent_at=sent_at,
        censored_at=(SENT + timedelta(hours=float(look))) if censor else None,
    )


def draw(rng, pool_a: dict[str, Pool], pool_b: dict[str, Pool], n: int) -> dict[str, Pool]:
    """One send: ``n`` recipients per arm, control from ``pool_a``, challenger from ``pool_b``.

    An A/A send (``pool_a is pool_b``) draws both arms from the union of the A/A pool's two arms:
    those are one random split of 200,000 whose matured click rates differ by chance (+1.1 %
    relative at seed 28), and drawing each arm from its own side gave every replicated send that
    same difference, 3.0 % false ships instead of 2.4 % (bench/aa_final_read.py).
    """
    if pool_a is pool_b:
        union = Pool(
            *(
                np.concatenate([getattr(p, f) for p in pool_a.values()])
                for f in Pool.__dataclass_fields__
            )
        )
        idx = rng.choice(len(union.keys), 2 * n, replace=False)
        return {
            arm: Pool(*(getattr(union, f)[part] for f in Pool.__dataclass_fields__))
            for arm, part in (("control", idx[:n]), ("personal", idx[n:]))
        }
    out = {}
    for arm, source in (("control", pool_a["control"]), ("personal", pool_b["personal"])):
        idx = rng.choice(len(source.keys), n, replace=False)
        out[arm] = Pool(*(getattr(source, f)[idx] for f in Pool.__dataclass_fields__))
    return out


def check_against_engine(spec, arms: dict[str, Pool], events: pd.DataFrame, looks) -> None:
    """The numpy statistics equal the engine's (DuckDB, ``as_of``) for this send."""
    assignment = pd.concat(
        pd.DataFrame({"recipient_key": p.keys, "segment": "active", "variant_id": arm})
        for arm, p in arms.items()
    )
    mine = events[events["recipient_key"].isin(set(assignment["recipient_key"]))]
    metrics = [spec.primary_metric, *(g.metric for g in spec.guardrails)]
    for look in looks:
        at = SENT + timedelta(hours=float(look))
        cut = mine[mine["ts"] <= pd.Timestamp(at)]
        for censor in (True, False):
            engine = compute_metrics(cut, assignment, metrics, as_of=at if censor else None)
            ours = _table(spec, arms, look, censor, metrics)
            for s in ours.stats:
                e = engine.get(s.metric, s.variant_id)
                assert (e.n, e.sum) == (s.n, s.sum), (look, censor, s, e)


def run_send(
    rules: dict, arms: dict[str, Pool], metrics: list[str]
) -> tuple[dict[str, list[Status]], int]:
    """The decision of each rule at each look, and the index of the first look at the final read.

    A decision is a function of the spec, the statistics and whether the final read time has
    passed (``as_of`` enters through it only), so looks with equal statistics on the same side of
    the final read are decided once (the simulated events stop within 2 days: most looks repeat).
    """
    out: dict[str, list[Status]] = {name: [] for name in rules}
    window = max(maturity_hours(rules["fixed"].metric(m)) for m in metrics)
    seen: dict[tuple, Status] = {}
    first_due = len(LOOKS_H)
    for i, look in enumerate(LOOKS_H):
        at = SENT + timedelta(hours=float(look))
        tables = {c: _table(rules["fixed"], arms, look, c, metrics) for c in (True, False)}
        for name, spec in rules.items():
            table = tables[name != "before"]
            last = table.last_sent_at
            due = last is None or at >= last + timedelta(hours=window)
            if name == "fixed" and due:
                first_due = min(first_due, i)
            key = (name, due, tuple((s.metric, s.variant_id, s.n, s.sum) for s in table.stats))
            if key not in seen:
                seen[key] = analyze(spec, table, as_of=at).decision.status
            out[name].append(seen[key])
    return out, first_due


def make_rules(demo, planned: int) -> dict:
    """The three rules on a two-arm demo spec planned at ``planned`` recipients per variant."""
    fixed = demo.model_copy(
        update={
            "variants": demo.variants[:2],
            "secondary_metrics": [],
            "planned_recipients_per_variant": planned,
        }
    )
    before = fixed.model_copy(
        update={"decision": fixed.decision.model_copy(update={"read_at": SENT})}
    )
    sequential = fixed.model_copy(
        update={"decision": fixed.decision.model_copy(update={"method": "sequential"})}
    )
    return {"before": before, "fixed": fixed, "sequential": sequential}


def write_result(name: str, result: dict) -> None:
    """Print ``result`` and keep it as bench/results/<name>.json."""
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aa", type=int, default=1000, help="A/A sends")
    parser.add_argument("--power", type=int, default=400, help="sends with the true effect")
    parser.add_argument("--seed", type=int, default=28)
    args = parser.parse_args()
    started = time.time()
    demo = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    fixed = make_rules(demo, 1)["fixed"]
    metrics = [fixed.primary_metric, *(g.metric for g in fixed.guardrails)]
    aa, aa_events = pools(fixed, 200_000, None, args.seed)
    lift = TrueEffects(click_given_open={"personal": 1.3})
    fx, _ = pools(fixed, 200_000, lift, args.seed + 1)
    final_h = maturity_hours(fixed.metric("click_rate"))
    # the plan: baseline and true lift of the matured (72 h) click rate in the populations
    base = np.mean((aa["control"].click <= final_h) & (aa["control"].delivered <= final_h))
    delivered = np.mean(aa["control"].delivered <= final_h)
    treated = np.mean((fx["personal"].click <= final_h) & (fx["personal"].delivered <= final_h))
    true_lift = treated / base - 1
    plan = sample_size_per_variant(
        base / delivered, true_lift, fixed.decision.alpha, fixed.decision.power, 1, delivered
    )
    n_aa = 4000
    n_power = int(plan.per_variant)
    rules = make_rules(demo, n_aa)
    rng = np.random.default_rng(args.seed)
    first = draw(rng, aa, aa, n_aa)
    check_against_engine(fixed, first, aa_events, [2, 30, 72, 80, 168])
    shipped = {name: np.zeros((args.aa, len(LOOKS_H)), bool) for name in rules}
    aa_final = np.zeros(args.aa, int)
    for i in range(args.aa):
        arms = first if i == 0 else draw(rng, aa, aa, n_aa)
        decisions, aa_final[i] = run_send(rules, arms, metrics)
        for name, statuses in decisions.items():
            shipped[name][i] = [s == Status.SHIP for s in statuses]
    found = {name: np.zeros((args.power, len(LOOKS_H)), bool) for name in rules}
    power_final = np.zeros(args.power, int)
    at_final: dict[str, dict[str, int]] = {name: {} for name in rules}
    rules = make_rules(demo, n_power)
    for i in range(args.power):
        arms = draw(rng, aa, fx, n_power)
        decisions, power_final[i] = run_send(rules, arms, metrics)
        for name, statuses in decisions.items():
            found[name][i] = [s == Status.SHIP for s in statuses]
            final = statuses[power_final[i]].value
            at_final[name][final] = at_final[name].get(final, 0) + 1
    early = np.arange(len(LOOKS_H))[None, :] < aa_final[:, None]  # before the final read
    result = {
        "aa_sends": args.aa,
        "aa_recipients_per_arm": n_aa,
        "power_sends": args.power,
        "planned_recipients_per_arm": n_power,
        "baseline_click_rate_72h": base / delivered,
        "true_relative_lift_72h": true_lift,
        "planned_power": fixed.decision.power,
        "alpha": fixed.decision.alpha,
        "looks_hours": LOOKS_H.tolist(),
        "final_read_look_hours": sorted({int(LOOKS_H[i]) for i in power_final}),
        "rules": {
            name: {
                "aa_false_ship_any_look": float(shipped[name].any(axis=1).mean()),
                "aa_false_ship_before_final_read": float((shipped[name] & early).any(1).mean()),
                "aa_false_ship_at_6h": float(shipped[name][:, 0].mean()),
                "power_at_final_read": float(
                    found[name][np.arange(args.power), power_final].mean()
                ),
                "power_by_day_7": float(found[name].any(axis=1).mean()),
                "power_sends_status_at_final_read": at_final[name],
            }
            for name in rules
        },
        "engine_check": "numpy statistics equal compute_metrics(as_of) at 2, 30, 72, 80, 168 h",
        "seconds": round(time.time() - started, 1),
        "load_average": os.getloadavg(),
    }
    write_result("maturity_peeking", result)
    print(
        "\n| rule | A/A false ship, any of 28 looks | before the final read | power at final read |"
    )
    print("|---|---|---|---|")
    for name, r in result["rules"].items():
        print(
            f"| {name} | {r['aa_false_ship_any_look']:.2%} | "
            f"{r['aa_false_ship_before_final_read']:.2%} | {r['power_at_final_read']:.1%} |"
        )


if __name__ == "__main__":
    main()
