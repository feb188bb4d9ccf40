"""How complete a raw webhook log is: which hours are not final yet, and per-hour, per-variant gaps.

ESPs retry for very different times, so an hour's events keep arriving long after it ends. An
event hour is *final* once the slowest retry window of the providers in the log has passed after
it: until then its counts can still grow, unevenly if a provider's retries are late. The per-hour,
per-variant counts of received events flag what an outage looks like: an hour with no request at
all between the first and the last, or an hour where one variant got nothing while the others did
(an outage must not silently bias one arm). ``ingest`` writes ``completeness.json`` beside the
events when its inputs include raw-log segments; ``loopexp ingest`` and ``run`` print it.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from loopexp.core.sql import sql_string
from loopexp.events import rawlog
from loopexp.events.adapters import webhooks

#: A variant with no event in an hour is flagged when every other variant has at least this many.
IMBALANCE_MIN = 10
FILE = "completeness.json"


def _hour(ts: float) -> datetime:
    return datetime.fromtimestamp(math.floor(ts / 3600) * 3600, tz=UTC)


def completeness(
    segments: list[Path], events_path: str | Path, now: float | None = None
) -> dict | None:
    """The completeness report of the raw log in ``segments`` (None when there is none)."""
    received = list(rawlog.iter_received(segments))
    if not received:
        return None
    now = time.time() if now is None else now
    providers = sorted({p for p, _, _ in received})
    window = max(webhooks.retry_hours(p) for p in providers)
    by_receipt = Counter(_hour(t) for _, t, _ in received)
    first, last = min(by_receipt), max(by_receipt)
    n_hours = int((last - first).total_seconds() // 3600) + 1
    gaps = [
        first + timedelta(hours=i)
        for i in range(n_hours)
        if by_receipt.get(first + timedelta(hours=i), 0) == 0
    ]
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AS h, "
            "coalesce(variant_id, '(none)') AS v, count(*) AS n "
            f"FROM read_parquet({sql_string(str(events_path))}) GROUP BY ALL ORDER BY h, v"
        ).fetchall()
    finally:
        con.close()
    hours: dict[datetime, dict[str, int]] = {}
    for h, v, n in rows:
        hours.setdefault(h.replace(tzinfo=UTC), {})[v] = int(n)
    variants = sorted({v for counts in hours.values() for v in counts})
    final_before = _hour(now) - timedelta(hours=math.ceil(window))
    per_hour = []
    for h, counts in sorted(hours.items()):
        full = {v: counts.get(v, 0) for v in variants}
        others_ok = [
            v
            for v in variants
            if full[v] == 0
            and len(variants) > 1
            and all(n >= IMBALANCE_MIN for w, n in full.items() if w != v)
        ]
        per_hour.append(
            {
                "hour": h.isoformat(),
                "final": h + timedelta(hours=1) <= final_before,
                "counts": full,
                "missing_variants": others_ok,
            }
        )
    return {
        "providers": providers,
        "retry_window_hours": window,
        "final_before": final_before.isoformat(),
        "not_final_hours": [r["hour"] for r in per_hour if not r["final"]],
        "receipt_gaps": [g.isoformat() for g in gaps],
        "imbalanced_hours": [r["hour"] for r in per_hour if r["missing_variants"]],
        "hours": per_hour,
    }


def write(report: dict, out_dir: str | Path) -> Path:
    """``completeness.json`` in the ingest folder."""
    path = Path(out_dir) / FILE
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return path


def summary_lines(report: dict) -> list[str]:
    """What a person needs to read: hours not final, gaps, imbalanced hours."""
    lines = []
    not_final = report["not_final_hours"]
    if not_final:
        lines.append(
            f"raw log: {len(not_final)} event hour(s) not final yet ({not_final[0]} … "
            f"{not_final[-1]}): {', '.join(report['providers'])} may still retry for up to "
            f"{report['retry_window_hours']:g} h; counts of these hours can still grow"
        )
    if report["receipt_gaps"]:
        lines.append(
            f"raw log: no webhook received in {len(report['receipt_gaps'])} hour(s) "
            f"({', '.join(report['receipt_gaps'][:5])}): was the receiver down?"
        )
    if report["imbalanced_hours"]:
        lines.append(
            f"raw log: a variant received no event while the others did in "
            f"{', '.join(report['imbalanced_hours'][:5])}: check for an outage biasing one arm"
        )
    return lines
