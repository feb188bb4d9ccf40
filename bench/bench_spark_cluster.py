"""Benchmark: ``loopexp metrics --engine spark`` on a real standalone cluster beside DuckDB.

Starts a master and two workers on 127.0.0.1 (``tests/_spark_cluster.py``: separate JVMs, ports
bound by the JVMs, stopped by PID), then runs ``loopexp metrics`` on the same files with
``--engine duckdb`` and with ``--engine spark`` (``$LOOPEXP_SPARK_MASTER`` = the cluster), each
a fresh process; prints wall seconds, the driver's CPU seconds and peak RSS (the executors' CPU
is in other JVMs: not counted), the load average, and whether the numbers agree to 1e-9.

Run:  .venv/bin/python bench/bench_spark_cluster.py DATA_DIR [--worker-memory 3g]
(``DATA_DIR`` holds events.parquet and assignment.parquet, e.g. bench_metrics' data-1000000).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._spark_cluster import spark_cluster  # noqa: E402 (the repository root first)


def run(data: Path, spec: Path, engine: str, env: dict[str, str]) -> tuple[dict, dict]:
    """One ``loopexp metrics --json`` process: its figures and its report."""
    args = [sys.executable, "-m", "loopexp.cli", "metrics", str(spec), "--json"]
    args += ["--events", str(data / "events.parquet")]
    args += ["--assignment", str(data / "assignment.parquet"), "--engine", engine]
    load = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "PYTHONPATH": str(ROOT)}
    )
    out, err = proc.communicate()
    figures = {
        "engine": engine,
        "exit": proc.returncode,
        "wall_s": round(time.monotonic() - start, 2),
        "load": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    if proc.returncode:
        figures["error"] = err.decode(errors="replace")[-500:]
        return figures, {}
    return figures, json.loads(out)


def same(a: object, b: object) -> bool:
    """The same JSON, numbers within 1e-9 (the engine name aside)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() - {"engine"}
        return keys == b.keys() - {"engine"} and all(same(a[k], b[k]) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument(
        "--spec", type=Path, default=ROOT / "experiments" / "subject_line_demo.yaml"
    )
    parser.add_argument("--worker-memory", default="3g")
    parser.add_argument("--executor-memory", default="2g")
    opts = parser.parse_args()
    duck, duck_report = run(opts.data, opts.spec, "duckdb", dict(os.environ))
    print(duck, flush=True)
    with tempfile.TemporaryDirectory(prefix="loopexp-cluster-") as folder:
        start = time.monotonic()
        with spark_cluster(Path(folder), 2, opts.worker_memory, opts.executor_memory) as cluster:
            print({"cluster_up_s": round(time.monotonic() - start, 1)}, flush=True)
            spark, spark_report = run(opts.data, opts.spec, "spark", cluster.driver_env())
    spark["same_numbers_as_duckdb"] = bool(spark_report) and same(duck_report, spark_report)
    print(spark, flush=True)


if __name__ == "__main__":
    main()
