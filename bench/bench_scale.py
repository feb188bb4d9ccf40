"""The scale table (issue 29): engine, same-work query and bare query at 1 / 10 / 30 / 100 M.

Two jobs, both around ``bench/bench_metrics.py`` (which measures; this only makes data and the
table):

- ``derive``: the data sets beside the simulated 10 M one, in DuckDB, in minutes instead of the
  hours ``simulate_campaign`` takes for 30 M on a loaded box: 1 M is the tenth of the 10 M
  recipients whose key hashes to 0 mod 10 (with all their events); 30 M and 100 M are 3 and 10
  copies of the 10 M files, each copy's recipient keys and event ids prefixed (``x1-``...), so
  keys stay distinct and every copy is a full campaign. Events per recipient, event mix and key
  lengths are those of the simulation; the copies' outcomes repeat (fine for time and memory,
  which is what the table measures).
- ``table``: one markdown row per size and implementation from bench_metrics reports, with how
  CPU seconds and peak RSS grow from one size to the next.

Run:
  .venv/bin/python bench/bench_scale.py derive /work/benchdata 1000000 30000000
  .venv/bin/python bench/bench_metrics.py --workdir $B --recipients 30000000 --repeat 1 \\
      --impls engine_all duck_same duck_bare --memory-limit 3GB --out $B/r-30m.json
  .venv/bin/python bench/bench_scale.py table $B/r-*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BASE = 10_000_000


def derive(workdir: Path, n: int) -> None:
    """``workdir/data-N`` from ``workdir/data-10000000`` (see the module docstring)."""
    import duckdb  # noqa: PLC0415

    src, out = workdir / f"data-{BASE}", workdir / f"data-{n}"
    if (out / "events.parquet").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{workdir / 'spill'}'")
    events, assignment = f"'{src}/events.parquet'", f"'{src}/assignment.parquet'"
    if n < BASE:
        if BASE % n:
            raise SystemExit(f"{n}: a size below {BASE:,} must divide it")
        keep = f"hash(recipient_key) % {BASE // n} = 0"
        parts = {
            "assignment": f"SELECT * FROM read_parquet({assignment}) WHERE {keep}",
            "events": f"SELECT * FROM read_parquet({events}) WHERE {keep}",
        }
    else:
        if n % BASE:
            raise SystemExit(f"{n}: a size above {BASE:,} must be a multiple of it")
        copies = range(n // BASE)
        parts = {
            "assignment": " UNION ALL ".join(
                f"SELECT * REPLACE ('x{k}-' || recipient_key AS recipient_key) "
                f"FROM read_parquet({assignment})"
                for k in copies
            ),
            "events": " UNION ALL ".join(
                f"SELECT * REPLACE ('x{k}-' || recipient_key AS recipient_key, "
                f"'x{k}-' || event_id AS event_id) FROM read_parquet({events})"
                for k in copies
            ),
        }
    for name, sql in parts.items():
        part = out / f"{name}.parquet.part"
        con.execute(f"COPY ({sql}) TO '{part}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)")
        part.rename(out / f"{name}.parquet")


def table(reports: list[Path]) -> str:
    """Markdown: per size and implementation CPU s / wall s / peak RSS, and the growth."""
    entries = [e for path in reports for e in json.loads(path.read_text())]
    sizes = sorted({e["recipients"] for e in entries})
    impls = list(dict.fromkeys(e["impl"] for e in entries))
    by = {(e["recipients"], e["impl"]): e for e in entries}
    lines = [
        "| recipients (events) | impl | memory_limit | CPU s | wall s | peak RSS MiB | load "
        "| × CPU / × RSS from the size before | ÷ same-work CPU / wall |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for impl in impls:
        before = None
        for n in sizes:
            e = by.get((n, impl))
            if e is None:
                continue
            cpu, wall = min(e["cpu_s"]), min(e["runs"])
            growth = ""
            if before is not None:
                growth = (
                    f"×{cpu / min(before['cpu_s']):.2f} / "
                    f"×{e['peak_rss_mib'] / before['peak_rss_mib']:.2f} "
                    f"(events ×{e['events'] / before['events']:.1f})"
                )
            same = by.get((n, "duck_same"))
            ratio = ""
            if same is not None and impl != "duck_same":
                ratio = f"{cpu / min(same['cpu_s']):.2f} / {wall / min(same['runs']):.2f}"
            lines.append(
                f"| {n / 1e6:g} M ({e['events'] / 1e6:.1f} M) | {impl} "
                f"| {e.get('memory_limit') or 'default'} | {cpu:.1f} | {wall:.1f} "
                f"| {e['peak_rss_mib']:,} | {max(e['loadavg']):.1f} | {growth} | {ratio} |"
            )
            before = e
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("derive", help="make data-N from data-10000000")
    d.add_argument("workdir", type=Path)
    d.add_argument("sizes", type=int, nargs="+")
    t = sub.add_parser("table", help="the scale table from bench_metrics reports")
    t.add_argument("reports", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "derive":
        for n in args.sizes:
            derive(args.workdir, n)
            print(f"data-{n} ready", file=sys.stderr)
    else:
        print(table(args.reports))


if __name__ == "__main__":
    main()
