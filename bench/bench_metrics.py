"""Benchmark: loopexp's metrics engine against hand-written DuckDB, polars, pandas (and Spark).

All compute the same per-variant sufficient statistics (n, sum, sum of squares) of three metrics
(click_rate, open_rate, revenue_per_delivered) from the same canonical events Parquet file and
assignment. Each implementation runs in its own process so its peak RSS is its own (``wait4``).

- ``engine``: :func:`loopexp.metrics.compute_metrics` (validation, quarantine counts by reason,
  exact duplicate count and dedupe, unassigned events, variant and variant × segment rows);
  ``engine_all``: the same with all eleven standard metrics.
- ``duck_same``: one hand-written DuckDB script returning the same things as the engine.
- ``duck_bare``: the bare numbers in one DuckDB query (no validation, no dedupe).
- ``polars`` / ``pandas``: the bare numbers.
- ``spark``: :func:`loopexp.metrics.spark.compute_metrics_spark`, local mode (run once; not judged).

Run:  .venv/bin/python bench/bench_metrics.py --recipients 1000000 3000000 [--dups] [--spark]
Results are printed and written to bench/results/metrics.json (bench/README.md has a table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["click_rate", "open_rate", "revenue_per_delivered"]
COLUMNS = {
    "click_rate": "clicked_human",
    "open_rate": "opened_human",
    "revenue_per_delivered": "revenue",
}
#: ``--memory-limit``: passed to the children (the engine reads $LOOPEXP_DUCKDB_MEMORY_LIMIT).
MEMORY_LIMIT_ENV, SPILL_ENV = "BENCH_DUCKDB_MEMORY_LIMIT", "BENCH_DUCKDB_SPILL"
IMPLS = ["engine", "engine_all", "duck_same", "duck_bare", "polars", "pandas"]

Stats = dict[str, dict[str, list[float]]]  # metric -> variant -> [n, sum, sum_sq]


# --- implementations ---------------------------------------------------------------------------


def run_engine(events: str, assignment: str, all_metrics: bool = False) -> dict:
    from loopexp.metrics import METRICS as ALL  # noqa: PLC0415
    from loopexp.metrics import compute_metrics  # noqa: PLC0415

    table = compute_metrics(events, assignment, list(ALL) if all_metrics else METRICS)
    stats: Stats = {}
    for s in table.stats:
        if s.segment == "all" and s.metric in METRICS:
            stats.setdefault(s.metric, {})[s.variant_id] = [s.n, s.sum, s.sum_sq]
    return {
        "stats": stats,
        "quarantine_reasons": table.quarantine_reasons,
        "unassigned_events": table.unassigned_events,
        "segment_rows": sum(s.segment != "all" for s in table.stats),
    }


def run_spark(events: str, assignment: str) -> dict:
    from loopexp.metrics.spark import compute_metrics_spark, spark_session  # noqa: PLC0415

    spark = spark_session(os.environ.get("LOOPEXP_SPARK_MASTER", "local[2]"))
    spark.sparkContext.setLogLevel("ERROR")
    table = compute_metrics_spark(events, assignment, METRICS, spark)
    stats: Stats = {}
    for s in table.stats:
        if s.segment == "all":
            stats.setdefault(s.metric, {})[s.variant_id] = [s.n, s.sum, s.sum_sq]
    return {"stats": stats, "quarantine_reasons": table.quarantine_reasons}


def _duck_rows_to_stats(rows: list[tuple]) -> Stats:
    stats: Stats = {}
    for variant, n, *sums in rows:
        for i, metric in enumerate(METRICS):
            stats.setdefault(metric, {})[variant] = [n, sums[2 * i], sums[2 * i + 1]]
    return stats


_OUTCOMES = """
    bool_or(event_type = 'open' AND is_machine_open IS NOT TRUE)::DOUBLE AS opened_human,
    bool_or(event_type = 'click' AND is_bot_click IS NOT TRUE)::DOUBLE AS clicked_human,
    coalesce(sum(revenue) FILTER (WHERE event_type = 'order'), 0) AS revenue,
    bool_or(event_type = 'delivered') AS delivered"""

_SUMS = ", ".join(
    f"coalesce(sum({c}) FILTER (WHERE d), 0), coalesce(sum({c} * {c}) FILTER (WHERE d), 0)"
    for c in COLUMNS.values()
)


def _duck_connect():
    """A DuckDB connection on DuckDB's defaults, or within ``--memory-limit`` when given (then
    also spilling to the work folder: the hand-written queries at 30 M+ need it on a shared box)."""
    import duckdb  # noqa: PLC0415

    con = duckdb.connect()
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        con.execute(f"SET memory_limit = '{limit}'")
        con.execute(f"SET temp_directory = '{os.environ[SPILL_ENV]}'")
    return con


def run_duck_same(events: str, assignment: str) -> dict:
    """Hand-written: everything the engine returns, as one would write it for this job."""
    con = _duck_connect()
    con.execute(f"""
        CREATE TEMP TABLE ev AS
        SELECT provider, event_id, event_type, ts, recipient_key, is_machine_open, is_bot_click,
            revenue,
            CASE
                WHEN event_id IS NULL OR event_id = '' THEN 'missing event_id'
                WHEN recipient_key IS NULL OR recipient_key = '' THEN 'missing recipient_key'
                WHEN ts IS NULL THEN 'missing or unparseable ts'
                WHEN event_type IS NULL OR event_type NOT IN ('send', 'delivered', 'deferred',
                    'bounce_hard', 'bounce_soft', 'open', 'click', 'unsubscribe', 'complaint',
                    'order') THEN 'unknown event_type'
                WHEN event_type = 'order' AND (revenue IS NULL OR revenue < 0)
                    THEN 'order without a valid revenue'
            END AS reason
        FROM read_parquet('{events}')""")
    reasons = dict(con.execute("SELECT reason, count(*) FROM ev GROUP BY 1").fetchall())
    # duplicates: hash candidates, exact check and ranking on candidates only
    con.execute("""
        CREATE TEMP TABLE dropped AS
        WITH cand AS (
            SELECT hash(provider, event_id) AS h FROM ev WHERE reason IS NULL
            GROUP BY 1 HAVING count(*) > 1
        )
        SELECT provider, event_id, ts, recipient_key, event_type FROM (
            SELECT e.*, row_number() OVER (
                PARTITION BY provider, event_id ORDER BY ts, recipient_key) AS rk
            FROM ev e WHERE reason IS NULL AND hash(provider, event_id) IN (SELECT h FROM cand)
        ) WHERE rk > 1""")
    (dups,) = con.execute("SELECT count(*) FROM dropped").fetchone()
    con.execute(f"""
        CREATE TEMP TABLE per AS
        SELECT recipient_key, count(*) AS n_events, {_OUTCOMES}
        FROM ev e ANTI JOIN dropped d USING (provider, event_id, ts, recipient_key, event_type)
        WHERE e.reason IS NULL GROUP BY recipient_key""")
    (unassigned,) = con.execute(f"""
        SELECT coalesce(sum(n_events), 0) FROM per
        ANTI JOIN read_parquet('{assignment}') a USING (recipient_key)""").fetchone()
    rows = con.execute(f"""
        WITH o AS (
            SELECT a.variant_id, a.segment,
                coalesce(p.delivered, false) AND a.variant_id <> 'holdout' AS d,
                coalesce(p.opened_human, 0) AS opened_human,
                coalesce(p.clicked_human, 0) AS clicked_human, coalesce(p.revenue, 0) AS revenue
            FROM read_parquet('{assignment}') a LEFT JOIN per p USING (recipient_key))
        SELECT variant_id, GROUPING(segment) AS g, count(*) FILTER (WHERE d), {_SUMS}
        FROM o GROUP BY GROUPING SETS ((variant_id), (variant_id, segment))""").fetchall()
    con.close()
    reasons = {k: v for k, v in reasons.items() if k is not None}
    if dups:
        reasons["duplicate (provider, event_id)"] = dups
    return {
        "stats": _duck_rows_to_stats([(r[0], *r[2:]) for r in rows if r[1] == 1]),
        "quarantine_reasons": reasons,
        "unassigned_events": int(unassigned),
        "segment_rows": 3 * sum(r[1] == 0 for r in rows),
    }


def run_duck_bare(events: str, assignment: str) -> dict:
    rows = (
        _duck_connect()
        .execute(f"""
        WITH per AS (
            SELECT recipient_key, {_OUTCOMES}
            FROM read_parquet('{events}') GROUP BY recipient_key),
        o AS (
            SELECT a.variant_id, coalesce(p.delivered, false) AND a.variant_id <> 'holdout' AS d,
                coalesce(p.opened_human, 0) AS opened_human,
                coalesce(p.clicked_human, 0) AS clicked_human, coalesce(p.revenue, 0) AS revenue
            FROM read_parquet('{assignment}') a LEFT JOIN per p USING (recipient_key))
        SELECT variant_id, count(*) FILTER (WHERE d), {_SUMS} FROM o GROUP BY 1""")
        .fetchall()
    )
    return {"stats": _duck_rows_to_stats(rows)}


def run_polars(events: str, assignment: str) -> dict:
    import polars as pl  # noqa: PLC0415

    ev = pl.scan_parquet(events).select(
        "recipient_key", "event_type", "is_machine_open", "is_bot_click", "revenue"
    )
    et = pl.col("event_type")
    per = ev.group_by("recipient_key").agg(
        (et == "delivered").any().alias("delivered"),
        ((et == "open") & pl.col("is_machine_open").fill_null(False).not_())
        .any()
        .cast(pl.Float64)
        .alias("opened_human"),
        ((et == "click") & pl.col("is_bot_click").fill_null(False).not_())
        .any()
        .cast(pl.Float64)
        .alias("clicked_human"),
        pl.when(et == "order").then(pl.col("revenue")).otherwise(0.0).sum().alias("revenue"),
    )
    out = (
        pl.scan_parquet(assignment)
        .join(per, on="recipient_key", how="left")
        .filter(pl.col("delivered").fill_null(False) & (pl.col("variant_id") != "holdout"))
        .group_by("variant_id")
        .agg(
            pl.len().alias("n"),
            *[
                expr
                for c in COLUMNS.values()
                for expr in (
                    pl.col(c).sum().alias(f"{c}_s"),
                    (pl.col(c) ** 2).sum().alias(f"{c}_q"),
                )
            ],
        )
        .collect()
    )
    rows = [
        (r["variant_id"], r["n"], *[r[f"{c}_{k}"] for c in COLUMNS.values() for k in "sq"])
        for r in out.iter_rows(named=True)
    ]
    return {"stats": _duck_rows_to_stats(rows)}


def run_pandas(events: str, assignment: str) -> dict:
    ev = pd.read_parquet(
        events,
        columns=["recipient_key", "event_type", "is_machine_open", "is_bot_click", "revenue"],
    )
    et = ev["event_type"]
    flags = pd.DataFrame(
        {
            "recipient_key": ev["recipient_key"],
            "delivered": et.eq("delivered"),
            "opened_human": et.eq("open") & ~ev["is_machine_open"].astype("boolean").fillna(False),
            "clicked_human": et.eq("click") & ~ev["is_bot_click"].astype("boolean").fillna(False),
            "revenue": ev["revenue"].where(et.eq("order"), 0.0).fillna(0.0),
        }
    )
    del ev
    per = flags.groupby("recipient_key", sort=False).agg(
        delivered=("delivered", "any"),
        opened_human=("opened_human", "any"),
        clicked_human=("clicked_human", "any"),
        revenue=("revenue", "sum"),
    )
    a = pd.read_parquet(assignment, columns=["recipient_key", "variant_id"])
    out = a.merge(per, left_on="recipient_key", right_index=True, how="left")
    out = out[out["delivered"].fillna(False).astype(bool) & out["variant_id"].ne("holdout")]
    rows = []
    for variant, g in out.groupby("variant_id"):
        sums = []
        for c in COLUMNS.values():
            x = g[c].astype(float)
            sums += [float(x.sum()), float((x * x).sum())]
        rows.append((variant, len(g), *sums))
    return {"stats": _duck_rows_to_stats(rows)}


IMPORTS = {
    "engine": ["loopexp.metrics"],
    "engine_all": ["loopexp.metrics"],
    "duck_same": ["duckdb"],
    "duck_bare": ["duckdb"],
    "polars": ["polars"],
    "pandas": ["pandas"],
    "spark": ["loopexp.metrics.spark", "pyspark.sql"],
}

RUNNERS = {
    "engine": run_engine,
    "engine_all": lambda e, a: run_engine(e, a, all_metrics=True),
    "duck_same": run_duck_same,
    "duck_bare": run_duck_bare,
    "polars": run_polars,
    "pandas": run_pandas,
    "spark": run_spark,
}


# --- data --------------------------------------------------------------------------------------


CHUNK = 2_500_000  # recipients simulated at a time above this size: pandas' memory stays bounded


def prepare(folder: Path, n: int, dups: bool) -> tuple[Path, Path]:
    """Simulate ``n`` recipients (~3 events each); ``dups`` repeats 10 % of the event ids.

    Above ``CHUNK`` recipients the campaign is simulated in chunks (seed 1, 2, ...: distinct
    recipient keys; event ids prefixed with the chunk) appended to one Parquet file, so 30 M
    recipients need no more memory than 2.5 M.
    """
    import pyarrow as pa  # noqa: PLC0415

    from loopexp import load_spec, simulate_campaign  # noqa: PLC0415

    events, assignment = folder / "events.parquet", folder / "assignment.parquet"
    if events.exists() and assignment.exists():
        return events, assignment
    folder.mkdir(parents=True, exist_ok=True)
    spec = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    chunks = [CHUNK] * (n // CHUNK) + ([n % CHUNK] if n % CHUNK else []) if n > CHUNK else [n]
    writers: dict[str, pq.ParquetWriter] = {}
    schemas: dict[str, pa.Schema] = {}
    part_e, part_a = folder / "events.parquet.part", folder / "assignment.parquet.part"
    for k, size in enumerate(chunks):
        campaign = simulate_campaign(spec, size, seed=1 + k)
        ev = campaign.events
        if len(chunks) > 1:
            ev["event_id"] = f"c{k:02d}-" + ev["event_id"].astype(str)
        if dups:
            rng = np.random.default_rng(2 + k)
            copies = ev.iloc[np.sort(rng.choice(len(ev), len(ev) // 10, replace=False))].copy()
            copies["ts"] = copies["ts"] + pd.Timedelta(minutes=5)  # a later resend: dropped
            ev = pd.concat([ev, copies], ignore_index=True)
        for name, frame, path in [("e", ev, part_e), ("a", campaign.assignment, part_a)]:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if name not in schemas:  # microsecond timestamps, as the single-file writer did
                schemas[name] = pa.schema(
                    [
                        f.with_type(pa.timestamp("us", tz=f.type.tz))
                        if pa.types.is_timestamp(f.type)
                        else f
                        for f in table.schema
                    ]
                )
                writers[name] = pq.ParquetWriter(path, schemas[name])
            writers[name].write_table(table.cast(schemas[name], safe=False), 1_000_000)
        del campaign, ev
    for writer in writers.values():
        writer.close()
    part_a.rename(assignment)
    part_e.rename(events)
    return events, assignment


# --- driver ------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and its waited-for children:
    what can be compared on a shared machine, where wall seconds depend on the neighbours."""
    import resource  # noqa: PLC0415

    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: per address space, so not inherited through fork+exec,
    unlike ``ru_maxrss``, which would report the driver's size for a small child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    impl: str,
    events: Path,
    assignment: Path,
    out: Path,
    sources: dict[str, str],
    memory_limit: str | None = None,
) -> tuple[float, float, dict]:
    """Run one implementation in a fresh process: (seconds of the computation, imports
    excluded; peak RSS in MiB; result with its CPU seconds and the load average)."""
    # "engine@main": the engine of another source tree (e.g. `git archive main`), same data
    runner, _, source = impl.partition("@")
    env = dict(os.environ)
    if memory_limit:
        spill = out.parent / "spill"
        spill.mkdir(exist_ok=True)
        env |= {
            MEMORY_LIMIT_ENV: memory_limit,
            SPILL_ENV: str(spill),
            "LOOPEXP_DUCKDB_MEMORY_LIMIT": memory_limit,
            "LOOPEXP_DUCKDB_TEMP_DIR": str(spill),
        }
    if source:
        env["PYTHONPATH"] = sources[source]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--one", runner, str(events), str(assignment), str(out)],
        env=env,
    )
    status = proc.wait()
    if status != 0:
        raise RuntimeError(f"{impl} failed with status {status}")
    result = json.loads(out.read_text())
    result["loadavg"] = float(Path("/proc/loadavg").read_text().split()[0])
    return result.pop("seconds"), result.pop("peak_rss_mib"), result


def same_numbers(a: Stats, b: Stats) -> bool:
    for metric, variants in a.items():
        for variant, (n, s, q) in variants.items():
            if variant == "holdout":
                continue
            m, t, r = b[metric][variant]
            if n != m or not np.isclose(s, t, rtol=1e-9) or not np.isclose(q, r, rtol=1e-9):
                return False
    return True


def markdown(report: list[dict]) -> str:
    """The report as bench/README.md's tables: per data set, per implementation, with the
    ratios to ``duck_same`` and ``duck_bare`` (per round, median over rounds; CPU seconds
    beside wall seconds)."""
    lines = []
    for name in dict.fromkeys(e["data"] for e in report):
        rows = [e for e in report if e["data"] == name]
        by_impl = {e["impl"]: e for e in rows}
        lines += [
            "",
            f"{name}: {rows[0]['events']:,} events; load average "
            f"{min(x for e in rows for x in e['loadavg']):.1f}–"
            f"{max(x for e in rows for x in e['loadavg']):.1f}",
            "",
            "| impl | wall s (runs) | CPU s (runs) | median wall / CPU | ÷ duck_same wall / CPU "
            "| ÷ duck_bare wall / CPU | peak RSS MiB | same |",
            "|---|---|---|---:|---:|---:|---:|---|",
        ]
        for e in rows:
            cpu = statistics.median(e["cpu_s"])
            ratios = []
            for base in ("duck_same", "duck_bare"):
                b = by_impl.get(base)
                if not b or e["impl"] == base or len(b["runs"]) != len(e["runs"]):
                    ratios.append("")
                    continue
                # per round (round robin: the same minute of the machine), then the median
                wall = statistics.median(x / y for x, y in zip(e["runs"], b["runs"], strict=True))
                cpus = statistics.median(x / y for x, y in zip(e["cpu_s"], b["cpu_s"], strict=True))
                ratios.append(f"{wall:.2f} / {cpus:.2f}")
            lines.append(
                f"| {e['impl']} | {', '.join(f'{x:.2f}' for x in e['runs'])} "
                f"| {', '.join(f'{x:.2f}' for x in e['cpu_s'])} | {e['median_s']:.2f} / {cpu:.2f} "
                f"| {ratios[0]} | {ratios[1]} | {e['peak_rss_mib']:,} "
                f"| {'✓' if e['same_numbers_as_engine'] else '✗'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--impls", nargs="+", default=IMPLS)
    parser.add_argument("--dups", action="store_true", help="also the duplicate-heavy variant")
    parser.add_argument(
        "--spark", action="store_true", help="also Spark local mode (once; not on --dups data)"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--src",
        nargs="*",
        default=[],
        help="NAME=DIR: also run the engine from source tree DIR, reported as engine@NAME",
    )
    parser.add_argument("--out", type=Path, help="the report (default: WORKDIR/metrics.json)")
    parser.add_argument(
        "--memory-limit",
        help="DuckDB memory_limit for every implementation (e.g. 3GB; spills to WORKDIR/spill)",
    )
    parser.add_argument("--prepare-only", action="store_true", help="only simulate the data")
    parser.add_argument("--table", nargs="+", type=Path, help="print REPORT.json(s) as markdown")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(markdown([e for path in args.table for e in json.loads(path.read_text())]))
        return
    if args.one:
        impl, events, assignment, out = args.one
        # Imports are not the computation (loopexp's package import pulls in MLflow & co).
        for module in IMPORTS[impl]:
            __import__(module)
        start, cpu = time.perf_counter(), _cpu_seconds()
        result = RUNNERS[impl](events, assignment)
        result["seconds"] = time.perf_counter() - start
        result["cpu_s"] = _cpu_seconds() - cpu
        result["peak_rss_mib"] = peak_rss_mib()
        Path(out).write_text(json.dumps(result))
        return

    sources = dict(item.split("=", 1) for item in args.src)
    report = []
    for n in args.recipients:
        for dups in [False, True] if args.dups else [False]:
            name = f"data-{n}{'-dup' if dups else ''}"
            start = time.perf_counter()
            events, assignment = prepare(args.workdir / name, n, dups)
            n_events = pq.ParquetFile(events).metadata.num_rows
            print(f"{name}: {n_events:,} events (ready in {time.perf_counter() - start:.0f} s)")
            if args.prepare_only:
                continue
            impls = [
                *args.impls,
                *(  # engine@NAME unless some impl@NAME is asked for already
                    f"engine@{name}"
                    for name in sources
                    if not any(i.endswith(f"@{name}") for i in args.impls)
                ),
                *(["spark"] if args.spark and not dups else []),
            ]
            # Round robin (every implementation once, then again): on a shared machine a burst
            # of load then hits all implementations alike instead of all runs of one.
            runs: dict[str, list] = {impl: [] for impl in impls}
            for rep in range(args.repeat):
                for impl in impls:
                    if impl == "spark" and rep:
                        continue  # once: minutes per run, and not judged
                    out = args.workdir / f"{impl}.json"
                    runs[impl].append(
                        measure(impl, events, assignment, out, sources, args.memory_limit)
                    )
            reference = runs["engine"][-1][2] if runs.get("engine") else None
            for impl, measured in runs.items():
                result = measured[-1][2]
                entry = {
                    "data": name,
                    "recipients": n,
                    "events": n_events,
                    "impl": impl,
                    "median_s": round(statistics.median(r[0] for r in measured), 2),
                    "runs": [round(r[0], 2) for r in measured],
                    "cpu_s": [round(r[2]["cpu_s"], 2) for r in measured],
                    "loadavg": [r[2]["loadavg"] for r in measured],
                    "peak_rss_mib": round(max(r[1] for r in measured)),
                    "memory_limit": args.memory_limit,
                    "same_numbers_as_engine": same_numbers(
                        (reference or result)["stats"], result["stats"]
                    ),
                }
                if "quarantine_reasons" in result:
                    entry["quarantine_reasons"] = result["quarantine_reasons"]
                report.append(entry)
                print(json.dumps(entry), flush=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.out or args.workdir / "metrics.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
