"""Benchmark: ``loopexp metrics`` under a hard address-space limit (RLIMIT_AS, as ``ulimit -v``).

Runs the CLI on an events + assignment pair in a fresh process whose address space is capped
before it starts, with loopexp's default DuckDB sizing (no ``LOOPEXP_DUCKDB_*`` variable, so
:func:`loopexp.core.config.default_memory_limit` derives the limit from the rlimit) and, for
comparison, unbounded. Prints exit code, wall and CPU seconds, peak RSS (``wait4``) and the load.

Run:  .venv/bin/python bench/bench_limit.py DATA_DIR [--limit-gib 2] [--spec SPEC] [--unbounded]
(``DATA_DIR`` holds events.parquet and assignment.parquet, e.g. bench_metrics' data-10000000).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(data: Path, spec: Path, limit: int | None) -> dict:
    """One ``loopexp metrics`` process, capped at ``limit`` bytes of address space (or not)."""

    def cap() -> None:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPEXP_DUCKDB")}
    env["PYTHONPATH"] = str(ROOT)
    args = [sys.executable, "-m", "loopexp.cli", "metrics", str(spec), "--json"]
    args += ["--events", str(data / "events.parquet")]
    args += ["--assignment", str(data / "assignment.parquet")]
    load = os.getloadavg()[0]
    start = time.monotonic()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(args, stdout=null, stderr=subprocess.PIPE, env=env, preexec_fn=cap)  # noqa: PLW1509 (only setrlimit, before exec)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        _, status, usage = os.wait4(proc.pid, 0)
    return {
        "limit_gib": limit / 2**30 if limit else None,
        "exit": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.monotonic() - start, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": usage.ru_maxrss // 1024,
        "load": [round(load, 2), round(os.getloadavg()[0], 2)],
        "error": err.strip()[-300:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--limit-gib", type=float, default=2.0)
    parser.add_argument(
        "--spec", type=Path, default=ROOT / "experiments" / "subject_line_demo.yaml"
    )
    parser.add_argument("--unbounded", action="store_true", help="also a run without the limit")
    opts = parser.parse_args()
    print(run(opts.data, opts.spec, int(opts.limit_gib * 2**30)), flush=True)
    if opts.unbounded:
        print(run(opts.data, opts.spec, None), flush=True)


if __name__ == "__main__":
    main()
