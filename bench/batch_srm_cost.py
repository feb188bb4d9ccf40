"""Cost of the SRM per send batch: the statistics query with and without the batch key.

The per-batch counts (:mod:`loopexp.metrics.periods`) ride in the one statistics query: its
segment grouping set is ``(variant_id, segment, send_batch)`` and Python adds the batch rows up
again (a separate scan of the events cost ~25 %; a third grouping set, tried first, +15 %). This
bench times ``compute_metrics`` (DuckDB) on one simulated send in six hourly batches with the
batch key (as shipped) and without it (the query compiled as before), alternating, side by side
in one run.

    .venv/bin/python bench/batch_srm_cost.py --recipients 300000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loopexp import load_spec, simulate_campaign  # noqa: E402
from loopexp.metrics import compile as compiled  # noqa: E402
from loopexp.metrics.engine import compute_metrics  # noqa: E402

SHIPPED = compiled._grouped


def _without_batches(*args, **kwargs):  # the query as it was before the batch SRM
    return SHIPPED(*args, **{**kwargs, "batches": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    spec = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    campaign = simulate_campaign(spec, args.recipients, seed=1)
    hours = pd.to_timedelta(pd.util.hash_pandas_object(campaign.events["recipient_key"]) % 6, "h")
    campaign.events["ts"] = campaign.events["ts"] + hours.to_numpy()  # six hourly batches
    metrics = [spec.primary_metric, *spec.secondary_metrics, *(g.metric for g in spec.guardrails)]
    times: dict[str, list[float]] = {"with the batch key": [], "without (before)": []}
    with tempfile.TemporaryDirectory() as tmp:
        events, assignment = campaign.write(tmp)
        for _ in range(args.rounds):
            for name, runs in times.items():
                compiled._grouped = SHIPPED if name.startswith("with ") else _without_batches
                start = time.perf_counter()
                table = compute_metrics(events, assignment, metrics)
                runs.append(time.perf_counter() - start)
                assert bool(table.sent_by_batch) == name.startswith("with ")
    compiled._grouped = SHIPPED
    n_events = len(campaign.events)
    print(
        f"{args.recipients:,} recipients, {n_events:,} events, {len(metrics)} metrics, "
        f"load average {os.getloadavg()}"
    )
    base = statistics.median(times["without (before)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name}: median {med:.2f} s over {len(ts)} runs ({med / base - 1:+.1%})")


if __name__ == "__main__":
    main()
