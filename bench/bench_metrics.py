"""Benchmark: loopexp's DuckDB metrics engine against a good pandas groupby, side by side.

Both compute the same sufficient statistics (n, sum, sum of squares per variant and metric) from the
same canonical events Parquet file and assignment. Run:  .venv/bin/python bench/bench_metrics.py
--recipients 1000000 2000000 . Results are printed and written to bench/results/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from loopexp import load_spec, simulate_campaign
from loopexp.metrics import compute_metrics

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["click_rate", "open_rate", "unsubscribe_rate", "revenue_per_delivered"]


def pandas_metrics(events_path: Path, assignment_path: Path) -> pd.DataFrame:
    """The same numbers with pandas: read only needed columns, one groupby per recipient, merge."""
    ev = pd.read_parquet(
        events_path,
        columns=["recipient_key", "event_type", "is_machine_open", "is_bot_click", "revenue"],
    )
    et = ev["event_type"]
    flags = pd.DataFrame(
        {
            "recipient_key": ev["recipient_key"],
            "delivered": et.eq("delivered"),
            "opened_human": et.eq("open") & ~ev["is_machine_open"].fillna(False).astype(bool),
            "clicked_human": et.eq("click") & ~ev["is_bot_click"].fillna(False).astype(bool),
            "unsubscribed": et.eq("unsubscribe"),
            "revenue": ev["revenue"].where(et.eq("order"), 0.0).fillna(0.0),
        }
    )
    per = flags.groupby("recipient_key", sort=False).agg(
        delivered=("delivered", "any"),
        opened_human=("opened_human", "any"),
        clicked_human=("clicked_human", "any"),
        unsubscribed=("unsubscribed", "any"),
        revenue=("revenue", "sum"),
    )
    assignment = pd.read_parquet(assignment_path)
    out = assignment.merge(per, left_on="recipient_key", right_index=True, how="left")
    out = out[out["delivered"].fillna(False).astype(bool)]
    cols = {
        "click_rate": "clicked_human",
        "open_rate": "opened_human",
        "unsubscribe_rate": "unsubscribed",
        "revenue_per_delivered": "revenue",
    }
    rows = []
    for metric, col in cols.items():
        x = out[col].astype(float)
        g = pd.DataFrame({"variant_id": out["variant_id"], "x": x, "x2": x * x}).groupby(
            "variant_id"
        )
        agg = g.agg(n=("x", "size"), sum=("x", "sum"), sum_sq=("x2", "sum")).reset_index()
        agg["metric"] = metric
        rows.append(agg)
    return pd.concat(rows, ignore_index=True)


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    spec = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    report = []
    for n in args.recipients:
        folder = args.workdir / f"data-{n}"
        events, assignment = folder / "events.parquet", folder / "assignment.parquet"
        if not events.exists():
            start = time.perf_counter()
            simulate_campaign(spec, n, seed=1).write(folder)
            print(f"simulated {n:,} recipients in {time.perf_counter() - start:.1f} s")
        t_duck, table = best_of(partial(compute_metrics, events, assignment, METRICS), args.repeat)
        t_pd, frame = best_of(partial(pandas_metrics, events, assignment), args.repeat)
        # Same numbers, or the comparison means nothing.
        for row in frame.itertuples():
            s = table.get(row.metric, row.variant_id)
            assert s.n == row.n and np.isclose(s.sum, row.sum) and np.isclose(s.sum_sq, row.sum_sq)
        n_events = pd.read_parquet(events, columns=["event_type"]).shape[0]
        entry = {
            "recipients": n,
            "events": n_events,
            "duckdb_s": round(t_duck, 3),
            "pandas_s": round(t_pd, 3),
            "speedup_vs_pandas": round(t_pd / t_duck, 2),
            "note": "duckdb also validates and quarantines every event; pandas does not",
        }
        report.append(entry)
        print(json.dumps(entry))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "metrics.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
