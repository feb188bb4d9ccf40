"""What the input gate of issue #19 costs: compute_metrics before and after, side by side.

    python bench/bench_validation.py --recipients 1000000 --before c9547a3

Both versions read the same canonical events Parquet file and assignment (a simulated campaign)
in separate processes, alternately, ``--repeats`` times; the median wall time of each and their
ratio are printed and written to bench/results/validation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["click_rate", "open_rate", "unsubscribe_rate", "revenue_per_delivered"]
SITECUSTOMIZE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()
                    and "editable" not in getattr(type(f), "__module__", "")]
sys.path.insert(0, {root!r})
"""
TIMER = """
import sys, time
import loopexp
from loopexp.metrics import compute_metrics
t = time.perf_counter()
table = compute_metrics(sys.argv[1], sys.argv[2], {metrics!r})
print(time.perf_counter() - t, table.events, loopexp.__file__)
"""


def timed(events: Path, assignment: Path, env: dict[str, str]) -> float:
    out = (
        subprocess.run(
            [sys.executable, "-c", TIMER.format(metrics=METRICS), str(events), str(assignment)],
            env=env,
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.splitlines()[-1]
        .split()
    )
    return float(out[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default="c9547a3")
    args = parser.parse_args()
    from loopexp import load_spec, simulate_campaign  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "loopexp"],
            capture_output=True,
            check=True,
        ).stdout
        (tmp / "before").mkdir()
        subprocess.run(["tar", "-x", "-C", str(tmp / "before")], input=archive, check=True)
        site = tmp / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(root=str(tmp / "before")))
        spec = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
        events, assignment = simulate_campaign(spec, args.recipients, seed=1).write(tmp / "data")
        envs = {"before": {**os.environ, "PYTHONPATH": str(site)}, "after": dict(os.environ)}
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for name, env in envs.items():
                times[name].append(timed(events, assignment, env))
    result = {
        "recipients": args.recipients,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "runs_s": times,
        "ratio_after_over_before": statistics.median(times["after"])
        / statistics.median(times["before"]),
        "machine": f"{os.cpu_count()} cores (shared)",
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "validation.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
