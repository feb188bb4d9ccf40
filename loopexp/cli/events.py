"""``loopexp ingest`` and ``metrics``: ESP exports into the event table, events into metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from loopexp.cli.common import FORMATS, check_format, console, load
from loopexp.cli.errors import err_console, fail

if TYPE_CHECKING:
    from loopexp.design.spec import ExperimentSpec
    from loopexp.events.summary import IngestSummary
    from loopexp.metrics.api import MetricsReport


def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="export files, folders or globs; a webhook receiver's folder (sealed *.wlog) "
            "or its bucket, s3://bucket/prefix"
        ),
    ],
    out: Annotated[Path, typer.Option(help="folder for events.parquet and quarantine.parquet")],
    fmt: Annotated[str, typer.Option("--format", help=f"one of {FORMATS}")] = "auto",
    spec_path: Annotated[
        Path | None, typer.Option("--spec", help="spec whose ingest: section to use")
    ] = None,
    assignment: Annotated[
        Path | None, typer.Option(help="assignment, to report bot removals per variant")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="file holding the hashing key [default: $LOOPEXP_HASH_KEY]")
    ] = None,
    demo_key: Annotated[
        bool, typer.Option(help="allow the public demo key (simulated data only)")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            help="exit 1 when any record is quarantined as an error (ignored provider types, "
            "e.g. SendGrid dropped, are not errors)"
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Read ESP exports into the canonical event table; quarantine what cannot be used."""
    from loopexp.core.keys import load_hash_key  # noqa: PLC0415 (fast --help)
    from loopexp.events.ingest import ingest as ingest_exports  # noqa: PLC0415 (DuckDB)
    from loopexp.events.scope import send_scope  # noqa: PLC0415 (fast --help)

    check_format(fmt)
    spec = load(spec_path) if spec_path else None
    config = spec.ingest if spec else None
    # issue 28: count the events that are not this send's (another campaign, before assignment)
    scope = send_scope(spec.data.campaign_ids if spec else None, assignment)
    key = load_hash_key(key_file, allow_demo=demo_key)  # a HashKeyError exits 2 (errors.py)
    summary = ingest_exports(
        paths, out, key=key, fmt=fmt, config=config, assignment=assignment, scope=scope
    )
    if json_out:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_ingest(summary)
    if strict and summary.errors:
        err_console.print(
            f"[bold red]--strict:[/] {summary.errors:,} record(s) quarantined as errors; see "
            f"{summary.quarantine_path} (column reason) and fix the export or the mapping"
        )
        raise typer.Exit(code=1)


def ingest_for_run(events: Path, folder: Path, fmt: str, spec: ExperimentSpec) -> Path:
    """Ingest the raw exports ``loopexp run`` was given; the canonical events' path."""
    from loopexp.core.keys import load_hash_key  # noqa: PLC0415 (fast --help)
    from loopexp.events.ingest import ingest_to_canonical  # noqa: PLC0415 (DuckDB)

    check_format(fmt)
    path = ingest_to_canonical(
        [events],
        folder,
        key=load_hash_key(),
        fmt=fmt,
        config=spec.ingest,
        memory_limit=spec.data.memory_limit,
        temp_directory=spec.data.temp_directory,
    )
    summary = json.loads((folder / "ingest_summary.json").read_text(encoding="utf-8"))
    for f in summary["files"]:
        console.print(
            f"  {f['path']} ({f['format']}): {f['input_records']:,} records → "
            f"{f['events']:,} events, {f['duplicates']:,} duplicates, "
            f"{f['quarantined'] - f['ignored']:,} quarantined as errors, {f['ignored']:,} ignored",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"ingested {summary['input_records']:,} records → {summary['events']:,} events, "
        f"{summary['duplicates']:,} duplicates, {summary['errors']:,} quarantined as errors, "
        f"{summary['ignored']:,} ignored (not an outcome) ({folder})",
        highlight=False,
    )
    _print_completeness(folder)
    return path


def _print_completeness(folder: Path) -> None:
    """A raw webhook log's hours not final yet and its gaps (``completeness.json``), if any."""
    from loopexp.events.completeness import FILE, summary_lines  # noqa: PLC0415 (DuckDB)

    path = folder / FILE
    if path.is_file():
        for line in summary_lines(json.loads(path.read_text(encoding="utf-8"))):
            console.print(f"[yellow]{escape(line)}[/]", highlight=False, soft_wrap=True)


def _print_ingest(summary: IngestSummary) -> None:
    from loopexp.events.adapters.base import IGNORED_TYPE  # noqa: PLC0415 (fast --help)

    table = Table(title="Ingest", show_header=False, box=box.ROUNDED)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    per_format: dict[str, list[int]] = {}
    for f in summary.files:
        per_format.setdefault(f.format, []).append(f.input_records)
    for name, counts in per_format.items():
        table.add_row(name, f"{sum(counts):,} records in {len(counts)} file(s)")
    table.add_row("input records", f"{summary.input_records:,}")
    table.add_row("events", f"{summary.events:,}")
    table.add_row("duplicates", f"{summary.duplicates:,}")
    errors = {r: n for r, n in summary.quarantine_reasons.items() if not r.startswith(IGNORED_TYPE)}
    table.add_row("quarantined (errors)", f"{summary.errors:,}")
    for reason, n in list(errors.items())[:8]:
        table.add_row("", f"{n:,} × {escape(reason)}")
    if summary.ignored:
        table.add_row("ignored (not an outcome)", f"{summary.ignored:,}")
        table.add_row(
            "", ", ".join(f"{escape(t)} {n:,}" for t, n in summary.ignored_by_type.items())
        )
    table.add_row("by type", ", ".join(f"{k} {v:,}" for k, v in summary.by_type.items()))
    table.add_row("machine opens", f"{summary.machine_opens:,}")
    table.add_row("bot clicks", f"{summary.bot_clicks:,}")
    for rule, per_variant in summary.removed_by_rule.items():
        parts = [f"{v}: {c['open']:,} opens, {c['click']:,} clicks" for v, c in per_variant.items()]
        table.add_row(rule, "\n".join(parts))
    if summary.assignment_matched is not None and summary.assignment_match_share is not None:
        table.add_row(
            "on the assignment",
            f"{summary.assignment_matched:,} of {summary.events:,} events "
            f"({summary.assignment_match_share:.1%})",
        )
    for reason, n in summary.outside_scope.items():  # issue 28
        table.add_row(f"not this send ({reason})", f"{n:,} events, quarantined at analysis")
    table.add_row("outputs", f"{summary.events_path}\n{summary.quarantine_path}")
    console.print(table)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def metrics(
    spec_path: Annotated[Path, typer.Argument(help="spec file (YAML): which metrics, defined how")],
    events: Annotated[
        str | None, typer.Option(help="canonical events, Parquet (globs allowed)")
    ] = None,
    assignment: Annotated[
        Path | None, typer.Option(help="assignment with recipient_key, segment, variant_id")
    ] = None,
    outcomes: Annotated[
        str | None, typer.Option(help="outcome table instead: one row per recipient")
    ] = None,
    engine: Annotated[
        str, typer.Option(help="duckdb (one machine) or spark ($LOOPEXP_SPARK_MASTER)")
    ] = "duckdb",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Compute a spec's metrics (sufficient statistics per variant) and the per-link clicks."""
    from loopexp.analysis.analyze import spec_caps  # noqa: PLC0415 (fast --help)
    from loopexp.events.scope import send_scope  # noqa: PLC0415 (fast --help)
    from loopexp.metrics.api import compute  # noqa: PLC0415 (DuckDB: fast --help)

    spec = load(spec_path)
    if (outcomes is None) == (events is None and assignment is None) or (
        outcomes is None and (events is None or assignment is None)
    ):
        fail("give --events and --assignment, or --outcomes (an outcome table), not both")
    if engine not in ("duckdb", "spark"):
        fail(f"--engine {engine}: use duckdb or spark")
    try:
        report = compute(
            spec.metric_defs,
            events=events,
            assignment=assignment,
            outcomes=outcomes,
            engine=engine,  # type: ignore[arg-type]
            caps=spec_caps(spec),  # decision.cap_percentile, on either input (as in `run`)
            **(
                {"max_quarantine_share": spec.data.max_quarantine_share}  # both engines stop alike
                | {"scope": send_scope(spec.data.campaign_ids, assignment)}  # issue 28
                | (
                    {
                        "memory_limit": spec.data.memory_limit,
                        "temp_directory": spec.data.temp_directory,
                    }
                    if engine == "duckdb"
                    else {}
                )
                if outcomes is None
                else {}
            ),
        )  # an EventsError or MetricsError exits 2 (errors.py)
    except ImportError as exc:
        fail(f"{exc}; the Spark engine needs pyspark: pip install 'loopexp[spark]'")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
        return
    _print_metrics(spec, report)


def _print_metrics(spec: ExperimentSpec, report: MetricsReport) -> None:
    from loopexp.metrics.engine import ALL_SEGMENTS  # noqa: PLC0415 (DuckDB: fast --help)

    t = report.table
    table = Table(
        title=f"{spec.name}: metrics ({report.input}, {report.engine})", box=box.SIMPLE_HEAD
    )
    for col, justify in (
        ("metric", "left"),
        ("variant", "left"),
        ("n", "right"),
        ("value", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)
    for s in t.stats:
        if s.segment == ALL_SEGMENTS:
            value = "–" if s.value != s.value else f"{s.value:.4g}"
            table.add_row(s.metric, s.variant_id, f"{s.n:,}", value)
    console.print(table)
    console.print(
        f"assigned {t.assigned}; {t.events:,} events, {t.quarantined:,} quarantined "
        f"{t.quarantine_reasons or ''}; {t.unassigned_events:,} events of unassigned recipients"
    )
    if t.caps:
        caps = ", ".join(f"{m} at {v:.6g}" for m, v in t.caps.items())
        console.print(f"per-recipient values capped (decision.cap_percentile): {caps}")
    if report.links is not None and not report.links.empty:
        links = Table(title="Human clicks per link", box=box.SIMPLE_HEAD)
        for col in ("variant", "link", "clicks", "share"):
            links.add_column(col, justify="right" if col in ("clicks", "share") else "left")
        for row in report.links.itertuples(index=False):
            links.add_row(row.variant_id, row.link, f"{row.clicks:,}", f"{row.share:.1%}")
        console.print(links)
