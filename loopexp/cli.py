"""The ``loopexp`` command: a thin shell over the Python API, for people and for schedulers."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loopexp.assign import AssignmentSummary, assign_recipients
from loopexp.keys import HashKey, HashKeyError, load_hash_key, redact_addresses
from loopexp.metrics.engine import ALL_SEGMENTS, EventsError
from loopexp.pipeline import IterationOutcome, run_iteration
from loopexp.plan import sample_size_per_variant
from loopexp.recipients import RecipientsError, read_recipients, read_table
from loopexp.report import comparisons_table
from loopexp.simulate import DEMO_EFFECTS, TrueEffects, simulate_campaign
from loopexp.spec import SpecError, load_spec
from loopexp.tracking import ui_hint

app = typer.Typer(
    help="Closed-loop email experimentation: define, assign, measure, analyse, decide, iterate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()

DEMO_SPEC = Path("experiments/subject_line_demo.yaml")

TrackingOpt = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI [default: sqlite:///mlflow.db in this folder]"),
]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="spec files (YAML) to check")],
) -> None:
    """Check experiment specs; print each problem with its file, line and field."""
    bad = 0
    for path in specs:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            bad += 1
            console.print(f"[red]✗[/] {escape(str(exc))}")
            continue
        console.print(
            f"[green]✓[/] {escape(str(path))}: {escape(spec.name)} iteration {spec.iteration}, "
            f"{len(spec.variants)} variants, primary metric {spec.primary_metric}"
        )
    if bad:
        raise typer.Exit(code=1)


@app.command()
def plan(
    spec_path: Annotated[Path, typer.Argument(help="spec file (YAML)")],
    baseline: Annotated[float, typer.Option(help="expected control rate of the primary metric")],
) -> None:
    """Recipients needed per variant to detect the spec's MDE on the primary metric."""
    spec = _load(spec_path)
    rule = spec.decision
    result = sample_size_per_variant(
        baseline, rule.mde_relative, rule.alpha, rule.power, len(spec.challengers)
    )
    console.print(
        f"{spec.primary_metric}: baseline {baseline:.2%}, MDE {rule.mde_relative:+.0%} relative, "
        f"power {rule.power:.0%}, alpha {result.alpha_per_comparison:.3g} per comparison → "
        f"[bold]{result.per_variant:,}[/] per variant, {result.total:,} in all"
    )


@app.command("assign")
def assign_cmd(
    spec_path: Annotated[Path, typer.Argument(help="spec file (YAML)")],
    recipients: Annotated[
        Path, typer.Option(help="recipient list, CSV or Parquet (columns: see audience.columns)")
    ],
    out: Annotated[Path, typer.Option(help="folder for assignment.parquet, send lists, summary")],
    key_file: Annotated[
        Path | None,
        typer.Option(help="file with the e-mail hashing key (default: $LOOPEXP_HASH_KEY(_FILE))"),
    ] = None,
    demo_key: Annotated[
        bool, typer.Option("--demo-key", help="allow the public demo key (demos only)")
    ] = False,
    history: Annotated[
        Path | None,
        typer.Option(help="contact history (recipient_key or email, sent_at), CSV or Parquet"),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="reference time of the recency exclusion, ISO 8601 (default: now)"),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the summary as JSON instead of tables")
    ] = False,
) -> None:
    """Assign recipients to variants (salted hash); write send lists, exclusions and a summary.

    Every input row is accounted for: assigned, or excluded with a reason (missing key, suppressed,
    no consent, unmapped segment, outside the audience, recently tested, duplicate key).
    """
    spec = _load(spec_path)
    try:
        key = _hash_key(key_file, demo_key)
        table = read_recipients(recipients)
        past = read_table(history, "contact history") if history else None
        reference = datetime.fromisoformat(as_of) if as_of else None
        result = assign_recipients(table, spec, key, past, reference, source=str(recipients))
    except (RecipientsError, HashKeyError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
    except ValueError as exc:  # e.g. an --as-of that is not a date
        _fail(f"{exc}")
        raise
    paths = result.write(out)
    summary = result.summary
    if json_out:
        typer.echo(summary.to_json())
        return
    _print_assignment(summary, paths)


def _hash_key(key_file: Path | None, demo_key: bool) -> HashKey | None:
    """The e-mail hashing key, or None when none is set (needed only for lists of addresses)."""
    if key_file or demo_key:
        key = load_hash_key(key_file, allow_demo=demo_key)
        if key.is_demo:  # on stderr, so that --json output stays parseable
            Console(stderr=True).print(
                "[bold yellow]warning:[/] hashing addresses with the public demo key: fine for a "
                "demo, never for real recipients (set LOOPEXP_HASH_KEY)"
            )
        return key
    try:
        return load_hash_key()
    except HashKeyError:
        return None  # prepare_recipients asks again, with instructions, if addresses need it


def _print_assignment(summary: AssignmentSummary, paths: dict[str, Path]) -> None:
    table = Table(title=f"Assignment of {summary.source}", box=box.ROUNDED)
    table.add_column("rows", style="bold")
    table.add_column("count", justify="right")
    table.add_row("input", f"{summary.input_rows:,}")
    table.add_row("assigned", f"{summary.assigned:,}")
    for reason, count in summary.excluded.items():
        table.add_row(f"excluded: {reason}", f"{count:,}")
    console.print(table)
    groups = Table(title="Assigned per segment and group", box=box.ROUNDED)
    groups.add_column("segment", style="bold")
    for group in summary.groups:
        groups.add_column(group, justify="right")
    groups.add_column("SRM p", justify="right")
    for segment, counts in summary.by_segment.items():
        groups.add_row(
            segment,
            *(f"{counts.get(g, 0):,}" for g in summary.groups),
            f"{summary.srm_p_values[segment]:.3g}",
        )
    groups.add_row("all", *(f"{n:,}" for n in summary.groups.values()), "", style="bold")
    console.print(groups)
    if summary.key_source:
        console.print(f"e-mail addresses hashed with the key from {summary.key_source}")
    for name, path in paths.items():
        console.print(f"[bold]{name}:[/] {path}", soft_wrap=True, highlight=False, emoji=False)


@app.command()
def simulate(
    spec_path: Annotated[Path, typer.Argument(help="spec file (YAML)")],
    out: Annotated[Path, typer.Option(help="folder for events.parquet and assignment.parquet")],
    recipients: Annotated[int, typer.Option(help="number of recipients")] = 60_000,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
    open_lift: Annotated[
        list[str] | None,
        typer.Option(help="true open-rate multiplier per variant, e.g. personal=1.2"),
    ] = None,
) -> None:
    """Simulate a send of a spec with known true effects (for trials, tests and demos)."""
    spec = _load(spec_path)
    effects = TrueEffects(open=_parse_effects(open_lift or []))
    campaign = simulate_campaign(spec, recipients, effects, seed=seed)
    events, assignment = campaign.write(out)
    console.print(f"{len(campaign.events):,} events → {events}\nassignment → {assignment}")


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(help="spec file (YAML) of the iteration to analyse")],
    events: Annotated[Path, typer.Option(help="canonical events, Parquet (globs allowed)")],
    assignment: Annotated[
        Path, typer.Option(help="assignment with recipient_key, segment, variant_id")
    ],
    out: Annotated[
        Path | None, typer.Option(help="output folder [default: runs/<name>-iter<N>]")
    ] = None,
    tracking_uri: TrackingOpt = None,
    next_spec_dir: Annotated[
        Path | None, typer.Option(help="where the next spec goes [default: beside the spec]")
    ] = None,
) -> None:
    """Analyse one iteration (papermill notebook), log it to MLflow, write the next spec."""
    spec = _load(spec_path)
    out = out or Path("runs") / spec.slug  # a safe slug: a name like ../../x stays in runs/
    outcome = _run(spec_path, events, assignment, out, tracking_uri, next_spec_dir)
    _print_outcome(outcome)


@app.command("metrics")
def metrics_cmd(
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
    from loopexp.metrics.api import compute  # noqa: PLC0415 (keeps `loopexp --help` fast)
    from loopexp.metrics.compile import MetricsError  # noqa: PLC0415

    spec = _load(spec_path)
    if (outcomes is None) == (events is None and assignment is None) or (
        outcomes is None and (events is None or assignment is None)
    ):
        _fail("give --events and --assignment, or --outcomes (an outcome table), not both")
    if engine not in ("duckdb", "spark"):
        _fail(f"--engine {engine}: use duckdb or spark")
    try:
        report = compute(
            spec.metric_defs,
            events=events,
            assignment=assignment,
            outcomes=outcomes,
            engine=engine,  # type: ignore[arg-type]
            **(
                {
                    "max_quarantine_share": spec.data.max_quarantine_share,
                    "memory_limit": spec.data.memory_limit,
                    "temp_directory": spec.data.temp_directory,
                }
                if engine == "duckdb" and outcomes is None
                else {}
            ),
        )
    except (EventsError, MetricsError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
    except ImportError as exc:
        _fail(f"{exc}; the Spark engine needs pyspark: pip install 'loopexp[spark]'")
        raise
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
        return
    _print_metrics(spec, report)


def _print_metrics(spec, report) -> None:
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
    if report.links is not None and not report.links.empty:
        links = Table(title="Human clicks per link", box=box.SIMPLE_HEAD)
        for col in ("variant", "link", "clicks", "share"):
            links.add_column(col, justify="right" if col in ("clicks", "share") else "left")
        for row in report.links.itertuples(index=False):
            links.add_row(row.variant_id, row.link, f"{row.clicks:,}", f"{row.share:.1%}")
        console.print(links)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo's data and outputs")] = Path(
        "runs/demo"
    ),
    recipients: Annotated[int, typer.Option(help="recipients in the simulated campaign")] = 60_000,
    seed: Annotated[int, typer.Option(help="random seed of the simulation")] = 7,
    spec_path: Annotated[Path, typer.Option("--spec", help="spec to simulate")] = DEMO_SPEC,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Run one full iteration of the loop on a simulated subject-line campaign."""
    spec = _load(spec_path)
    console.print(
        f"Simulating {recipients:,} recipients for [bold]{escape(spec.name)}[/]; the truth: "
        f"{DEMO_EFFECTS.describe()}"
    )
    campaign = simulate_campaign(spec, recipients, DEMO_EFFECTS, seed=seed)
    events, assignment = campaign.write(out / "data")
    console.print(f"{len(campaign.events):,} events written to {events}")
    outcome = _run(spec_path, events, assignment, out / "analysis", tracking_uri, out)
    _print_outcome(outcome)


def _quiet_mlflow() -> None:
    """MLflow's INFO lines (database migrations) are noise in a terminal summary."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported


def _run(
    spec_path: Path,
    events: Path,
    assignment: Path,
    out: Path,
    tracking_uri: str | None,
    next_spec_dir: Path | None,
) -> IterationOutcome:
    _quiet_mlflow()
    from papermill.exceptions import PapermillExecutionError  # noqa: PLC0415 (papermill is slow)

    try:
        return run_iteration(spec_path, events, assignment, out, tracking_uri, next_spec_dir)
    except (SpecError, EventsError, FileNotFoundError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
    except PapermillExecutionError as exc:
        if exc.ename in ("EventsError", "QuarantineError", "SpecError"):  # bad input, not a bug
            _fail(f"{exc.evalue}\n(the partly executed notebook is in {out})")
        console.print(
            f"[bold red]the analysis notebook failed[/] in cell {exc.exec_count}: "
            f"{exc.ename}: {escape(redact_addresses(exc.evalue))}\nThe partly executed notebook "
            f"is in {out}; "
            "open it to see the traceback."
        )
        raise typer.Exit(code=1) from None


def _load(path: Path):
    try:
        return load_spec(path)
    except SpecError as exc:
        _fail(str(exc))


def _parse_effects(items: list[str]) -> dict[str, float]:
    parsed = {}
    for item in items:
        variant, _, value = item.partition("=")
        try:
            parsed[variant] = float(value)
        except ValueError:
            _fail(f"effect {item!r} should look like variant=1.2")
    return parsed


def _print_outcome(outcome: IterationOutcome) -> None:
    results = outcome.results
    d = results.decision
    metrics = [d.primary_metric, *dict.fromkeys(g.metric for g in d.guardrails)]
    console.print(comparisons_table(results, metrics, show_probability=False))
    table = Table(title="Decision", show_header=False, box=box.ROUNDED)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("status", d.status.value)
    if d.best_challenger:  # the winner when there is one, else the most promising challenger
        table.add_row("winner" if d.winner else "best challenger", d.best_challenger)
        if d.rel_lift is not None:
            table.add_row(f"{d.primary_metric} lift", f"{d.rel_lift:+.1%}")
        if d.rel_ci_low is not None and d.rel_ci_high is not None:
            table.add_row("95% CI", f"{d.rel_ci_low:+.1%} to {d.rel_ci_high:+.1%}")
        if d.p_value_adjusted is not None:
            table.add_row("adjusted p", f"{d.p_value_adjusted:.3g}")
    table.add_row("reasons", Text("\n".join(f"• {r}" for r in d.reasons)))
    console.print(table)
    data = results.data
    if data.quarantined:
        quarantine_file = outcome.output_dir / "quarantine.parquet"
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in data.quarantine_reasons.items())
        console.print(
            Text.assemble(
                ("Quarantined: ", "bold"),
                f"{data.quarantined:,} of {data.events:,} events ({reasons}) → {quarantine_file}",
            ),
            soft_wrap=True,
        )
    else:
        console.print(Text.assemble(("Quarantined: ", "bold"), f"none of {data.events:,} events"))
    for label, value in (
        ("Next spec", outcome.next_spec_path or f"not written: {outcome.next_spec_note}"),
        ("MLflow run", outcome.run_id),
        ("HTML report", outcome.report_path),
        ("Open the UI", ui_hint(outcome.tracking_uri, outcome.experiment_id)),
    ):
        console.print(f"[bold]{label}:[/] {value}", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    app()
