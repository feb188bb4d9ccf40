"""Profile the metrics engine statement by statement with DuckDB's JSON profiler.

Every statement the engine sends to DuckDB is timed (execute to the next statement, so fetching
is included) and its profile read back: the slowest operators of each are printed, with the
process's peak RSS so far (VmHWM) after the statement.

Run:  .venv/bin/python bench/profile_metrics.py EVENTS ASSIGNMENT [METRIC ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from loopexp.metrics import compute_metrics, engine


def _operators(node: dict, out: list) -> list:
    name = node.get("operator_name") or node.get("operator_type")
    if name:
        out.append((float(node.get("operator_timing", 0.0)), name.strip(), node))
    for child in node.get("children", []):
        _operators(child, out)
    return out


def _peak_rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


class _Profiled:
    """A DuckDB connection whose statements are timed and profiled."""

    def __init__(self, con, profile: Path) -> None:
        self._con, self._profile, self.log = con, profile, []

    def _close_last(self) -> None:
        if self.log and "seconds" not in self.log[-1]:
            self.log[-1]["seconds"] = time.perf_counter() - self.log[-1]["start"]
            self.log[-1]["hwm_mib"] = _peak_rss_mib()
            if self._profile.exists():
                tree = json.loads(self._profile.read_text())
                ops = sorted(_operators(tree, []), key=lambda t: -t[0])[:4]
                self.log[-1]["operators"] = [(round(t, 2), n) for t, n, _ in ops]
                self._profile.unlink()

    def execute(self, sql, *args):
        self._close_last()
        self.log.append({"sql": " ".join(str(sql).split())[:110], "start": time.perf_counter()})
        return self._con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


def main() -> None:
    events, assignment, *metrics = sys.argv[1:]
    metrics = metrics or ["click_rate", "open_rate", "revenue_per_delivered"]
    profile = Path(tempfile.mkdtemp()) / "profile.json"
    original = engine.connect
    runs: list[_Profiled] = []

    @contextmanager
    def connect(*args):
        with original(*args) as (con, limit):
            con.execute("PRAGMA enable_profiling = 'json'")
            con.execute(f"PRAGMA profiling_output = '{profile}'")
            runs.append(_Profiled(con, profile))
            yield runs[-1], limit
            runs[-1]._close_last()

    engine.connect = connect
    start = time.perf_counter()
    compute_metrics(events, assignment, metrics)
    total = time.perf_counter() - start
    for entry in runs[0].log:
        if entry["seconds"] >= 0.05:
            print(f"{entry['seconds']:7.2f} s  peak {entry['hwm_mib']:5d} MiB  {entry['sql']}")
            for seconds, name in entry.get("operators", []):
                print(f"{'':12}{seconds:6.2f} s  {name}")
    print(f"{total:7.2f} s  in all")


if __name__ == "__main__":
    main()
