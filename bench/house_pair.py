"""Benchmark: the same work at 10 M from two source trees, side by side (issue #23's before/after).

Issue #23 moved every module into stage folders and split the large ones; this checks that nothing
got slower. Each measurement runs in a fresh process with ``PYTHONPATH`` set to one tree, and the
trees alternate round by round, so a burst of load on the shared machine hits both alike:

- ``assign``: ``assign_recipients`` of 10 M recipients read from Parquet (all cores);
- ``metrics``: ``compute_metrics`` on the 10 M-recipient events of ``bench_metrics.py`` (~28.7 M
  events; prepare them with ``bench_metrics.py --recipients 10000000 --prepare-only``);
- ``ingest``: ``bench_ingest.py``'s SendGrid ingest of 10 M events (each tree's own child).

Run:  .venv/bin/python bench/house_pair.py --tree before=/path/to/old/checkout --tree after=.
      --data /work/benchdata
Imports are not timed; wall and CPU seconds (user + system, threads and workers included) and peak
RSS are printed per round and as the best of the rounds, with the after/before ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
job, data = sys.argv[1], Path(sys.argv[2])

def usage():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

if job == "assign":
    import pyarrow.parquet as pq
    from loopexp import assign_recipients, load_spec
    try:
        from loopexp.assignment.recipients import read_recipients
    except ImportError:
        from loopexp.recipients import read_recipients
    spec = load_spec(Path(sys.argv[3]) / "experiments" / "subject_line_demo.yaml")
    source = data / "recipients-10M.parquet"
    if not source.exists():
        import numpy as np, pyarrow as pa
        n = 10_000_000
        segs = np.array(["prospect", "new_customer", "existing_customer", "inactive"])
        pq.write_table(pa.table({"recipient_key": [f"cust-{i:09d}" for i in range(n)],
                                 "segment": segs[np.arange(n) % 4]}), source)
    cpu, t0 = usage(), time.perf_counter()
    result = assign_recipients(read_recipients(source), spec)
    wall, cpu = time.perf_counter() - t0, usage() - cpu
    import hashlib
    variants = result.assignment["variant_id"].astype(str).to_numpy().astype("U")
    out = {"assigned": int(result.summary.assigned),
           "variants_digest": hashlib.sha256(variants.tobytes()).hexdigest()[:12]}
elif job == "metrics":
    import hashlib
    from loopexp.metrics import compute_metrics
    folder = data / "data-10000000"
    cpu, t0 = usage(), time.perf_counter()
    table = compute_metrics(folder / "events.parquet", folder / "assignment.parquet",
                            ["click_rate", "open_rate", "revenue_per_delivered"])
    wall, cpu = time.perf_counter() - t0, usage() - cpu
    rows = sorted((s.metric, s.variant_id, s.segment, s.n, round(s.sum, 6)) for s in table.stats)
    out = {"stats_digest": hashlib.sha256(repr(rows).encode()).hexdigest()[:12],
           "quarantined": sum(table.quarantine_reasons.values())}
else:
    sys.path.insert(0, str(Path(sys.argv[3]) / "bench"))
    import bench_ingest
    cpu, t0 = usage(), time.perf_counter()
    r = bench_ingest.child("ingest", data / "sendgrid_10000000.ndjson", data / "ingest_out")
    wall, cpu = time.perf_counter() - t0, usage() - cpu
    out = {"events": r.get("events")}
out |= {"wall_s": wall, "cpu_s": cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loadavg": os.getloadavg()[0]}
print(json.dumps(out))
"""


def run(job: str, tree: Path, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "LOOPEXP_HASH_KEY": "bench-secret"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, job, str(data), str(tree)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=data,  # not a source tree: `python -c` puts the working folder first on sys.path
    )
    if proc.returncode:
        raise SystemExit(f"{job} @ {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR (two of them)")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--jobs", nargs="+", default=["assign", "metrics", "ingest"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    trees = {k: Path(v).resolve() for k, v in (t.split("=", 1) for t in args.tree)}
    report: dict[str, dict[str, list[dict]]] = {}
    for job in args.jobs:
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
            for name in order:
                result = run(job, trees[name], args.data)
                report.setdefault(job, {}).setdefault(name, []).append(result)
                print(job, name, json.dumps(result), flush=True)
    names = list(trees)
    print(f"\nbest of {args.rounds} (CPU s, wall s, peak RSS MiB); ratio {names[1]}/{names[0]}")
    for job, by_tree in report.items():
        best = {n: min(by_tree[n], key=lambda r: r["cpu_s"]) for n in names}
        a, b = best[names[0]], best[names[1]]
        print(
            f"{job:8s} {names[0]} {a['cpu_s']:.1f} / {a['wall_s']:.1f} / {a['peak_rss_mib']:.0f}"
            f"   {names[1]} {b['cpu_s']:.1f} / {b['wall_s']:.1f} / {b['peak_rss_mib']:.0f}"
            f"   CPU x{b['cpu_s'] / a['cpu_s']:.2f}  wall x{b['wall_s'] / a['wall_s']:.2f}"
        )
    out = args.data / "house_pair.json"
    out.write_text(json.dumps({"at": time.strftime("%Y-%m-%d %H:%M UTC"), "runs": report}))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
