"""``loopexp run``, ``upload`` and ``runs``: one iteration analysed, logged, decided and listed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loopexp.cli.common import (
    FORMATS,
    ForceOpt,
    LockTimeoutOpt,
    TrackingOpt,
    console,
    load,
    progress,
    quiet_mlflow,
)
from loopexp.cli.errors import EXIT_DECIDED, EXIT_INVALID, EXIT_KEEP_TESTING, fail
from loopexp.cli.events import ingest_for_run

if TYPE_CHECKING:
    from loopexp.analysis.results import GuardrailResult, Status
    from loopexp.run.pipeline import IterationOutcome


def decision_exit(status: Status) -> int:
    """The exit code of a decided iteration: 0 decided, 3 keep testing, 4 invalid split."""
    from loopexp.analysis.results import Status  # noqa: PLC0415 (pandas: fast --help)

    codes = {
        Status.SHIP: EXIT_DECIDED,
        Status.NO_DIFFERENCE: EXIT_DECIDED,
        Status.GUARDRAIL_VETO: EXIT_DECIDED,
        Status.KEEP_TESTING: EXIT_KEEP_TESTING,
        Status.INVALID_SRM: EXIT_INVALID,
    }
    return codes.get(status, EXIT_DECIDED)


def run(
    spec_path: Annotated[Path, typer.Argument(help="spec file (YAML) of the iteration to analyse")],
    assignment: Annotated[
        Path, typer.Option(help="assignment with recipient_key, segment, variant_id")
    ],
    events: Annotated[
        Path | None,
        typer.Option(
            help="canonical events, Parquet (globs allowed)",
            show_default="the spec's events: path (an ESP export folder), ingested first",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder", show_default="runs/<name>-iter<N>")
    ] = None,
    tracking_uri: TrackingOpt = None,
    next_spec_dir: Annotated[
        Path | None, typer.Option(help="where the next spec goes", show_default="beside the spec")
    ] = None,
    events_format: Annotated[
        str,
        typer.Option(
            help="format of --events: canonical Parquet, or raw ESP exports (a file, folder or "
            f"glob) ingested into <out>/ingest first: {FORMATS}"
        ),
    ] = "canonical",
    force: ForceOpt = False,
    lock_timeout: LockTimeoutOpt = 600.0,
) -> None:
    """Analyse one iteration (papermill notebook), log it to MLflow, write the next spec.

    Idempotent: the same spec on the same data reports the run already logged (no second run,
    no rewritten next spec) unless --force. One run per experiment at a time (a lock).
    """
    spec = load(spec_path)
    out = out or Path("runs") / spec.slug  # a safe slug: a name like ../../x stays in runs/
    if events is None:
        if spec.events is None:
            fail(
                f"{spec_path}: no events: give --events, or name the ESP export folder in the "
                "spec, e.g. `events: {path: exports/sendgrid/, format: auto}` (relative to the "
                "spec's folder)"
            )
        events, events_format = spec.events.resolve(spec_path), spec.events.format
        if not events.exists() and not any(ch in str(events) for ch in "*?["):
            fail(
                f"{events}: the export folder named in {spec_path} (events.path "
                f"{spec.events.path!r}, relative to the spec's folder) does not exist"
            )
        if events_format == "canonical" and events.is_dir():
            events = events / "*.parquet"
    if events_format != "canonical":
        events = ingest_for_run(events, out / "ingest", events_format, spec)
    outcome = run_iteration(
        spec_path, events, assignment, out, tracking_uri, next_spec_dir, force, lock_timeout
    )
    print_outcome(outcome)
    raise typer.Exit(code=decision_exit(outcome.results.decision.status))


def upload(
    folder: Annotated[
        Path, typer.Argument(help="attempt folder kept locally (or the run's --out folder)")
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI", show_default="the one the run used"),
    ] = None,
    force: ForceOpt = False,
    lock_timeout: LockTimeoutOpt = 600.0,
) -> None:
    """Log a run kept locally (the tracking server was down) and write its next spec."""
    from loopexp.run.pipeline import upload as upload_attempt  # noqa: PLC0415 (fast --help)

    quiet_mlflow()
    outcome = upload_attempt(folder, tracking_uri, force, lock_timeout, progress=progress)
    print_outcome(outcome)
    raise typer.Exit(code=decision_exit(outcome.results.decision.status))


def runs(
    campaign: Annotated[str, typer.Option(help="campaign (the MLflow experiment)")],
    tracking_uri: TrackingOpt = None,
    last: Annotated[
        int, typer.Option(min=0, help="show the latest N runs (0: all; one search page each)")
    ] = 50,
) -> None:
    """List a campaign's iterations with their decisions (the latest 50 unless --last)."""
    from loopexp.track import rest  # noqa: PLC0415
    from loopexp.track.store import redact  # noqa: PLC0415
    from loopexp.track.views import resolve_tracking_uri, ui_hint  # noqa: PLC0415

    quiet_mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    if rest.usable(uri):  # a server: its REST API, without importing MLflow (~2 s)
        found: list[Any] = rest.list_runs(campaign, uri, latest=last or None)
    else:
        from loopexp.track.tracking import list_runs  # noqa: PLC0415

        found = list_runs(campaign, uri, latest=last or None)
    if not found:
        console.print(f"no runs of campaign {escape(campaign)!r} in {redact(uri)}")
        return
    console.print(runs_table(campaign, found, shown_all=len(found) < last or not last))
    hint = ui_hint(uri, found[0].info.experiment_id, campaign)
    console.print(f"Open the UI: {escape(hint)}", soft_wrap=True)


def run_iteration(
    spec_path: Path,
    events: Path,
    assignment: Path,
    out: Path,
    tracking_uri: str | None,
    next_spec_dir: Path | None,
    force: bool = False,
    lock_timeout: float = 600.0,
) -> IterationOutcome:
    """One iteration through :func:`loopexp.run.pipeline.run_iteration`, reporting progress."""
    from loopexp.run.pipeline import run_iteration as run_pipeline  # noqa: PLC0415 (fast --help)

    quiet_mlflow()
    return run_pipeline(
        spec_path,
        events,
        assignment,
        out,
        tracking_uri,
        next_spec_dir,
        force=force,
        lock_timeout=lock_timeout,
        progress=progress,
    )


def runs_table(campaign: str, found: list[Any], shown_all: bool = True) -> Table:
    """A campaign's runs, oldest first, readable at 80 columns (``shown_all``: not cut by --last).

    The summary gets the width (at least 36 characters, folded on words); the start time and the
    run id go on a dim second line, so narrow columns never cut a summary to a word per line.
    """
    from loopexp.core import tags as tag  # noqa: PLC0415 (only this command reads tags)

    count = f"{len(found)} run" + ("" if len(found) == 1 else "s")
    if not shown_all:
        count = f"the latest {count} (--last 0: all)"
    table = Table(title=f"{campaign} · {count}", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("iter", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("run", no_wrap=True, max_width=24, overflow="ellipsis")
    table.add_column("summary", min_width=36, ratio=1, overflow="fold")
    for r in found:
        tags = r.data.tags
        started = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.info.start_time / 1000))
        table.add_row(
            tags.get(tag.ITERATION, "?"),
            r.info.status,
            escape(r.info.run_name or ""),
            escape(tags.get(tag.SUMMARY) or tags.get(tag.FAILURE, "")),
        )
        table.add_row("", "", f"[dim]{started} UTC[/]", f"[dim]{r.info.run_id}[/]")
    return table


def _guardrail_table(guardrails: list[GuardrailResult]) -> Table:
    """The guardrails as the veto read them: its one-sided p and interval, not the family's."""
    table = Table(title="Guardrails (the test each veto used)", box=box.SIMPLE_HEAD)
    for column in ("metric", "variant", "change (CI)", "mode, margin", "one-sided p", "verdict"):
        table.add_column(column, justify="right" if column == "one-sided p" else "left")
    for g in guardrails:
        ci = (
            f" ({g.rel_ci_low:+.1%}, {g.rel_ci_high:+.1%}) {100 * (g.ci_level or 0.95):.4g}%"
            if g.rel_ci_low is not None and g.rel_ci_high is not None
            else ""
        )
        lift = "n/a" if g.rel_lift is None else f"{g.rel_lift:+.1%}"
        table.add_row(
            Text(g.metric),
            Text(g.variant),
            lift + ci,
            f"{g.mode}, {g.max_relative_increase:.0%}",
            "" if g.p_value is None else f"{g.p_value:.3g}",
            "passes" if g.passed else "[bold red]vetoes[/]",
        )
    return table


def _decision_table(outcome: IterationOutcome) -> Table:
    d = outcome.results.decision
    table = Table(title="Decision", show_header=False, box=box.ROUNDED)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("status", d.status.value)
    if d.best_challenger:  # the winner when there is one, else the most promising challenger
        table.add_row("winner" if d.winner else "best challenger", d.best_challenger)
        if d.rel_lift is not None:
            table.add_row(f"{d.primary_metric} lift", f"{d.rel_lift:+.1%}")
        if d.rel_ci_low is not None and d.rel_ci_high is not None:
            level = f"{100 * (d.ci_level or 0.95):.4g}% CI"  # the level the decision's test used
            table.add_row(level, f"{d.rel_ci_low:+.1%} to {d.rel_ci_high:+.1%}")
        if d.p_value_adjusted is not None:
            table.add_row("adjusted p", f"{d.p_value_adjusted:.3g}")
    table.add_row("reasons", Text("\n".join(f"• {r}" for r in d.reasons)))
    return table


def _report_path(outcome: IterationOutcome) -> Path:
    """``<out>/report.html``, the published copy a reader should open; else the attempt's."""
    published = outcome.output_dir / "report.html"
    return published if published.exists() else outcome.report_path


def print_outcome(outcome: IterationOutcome) -> None:
    """An iteration's comparison, guardrails, decision and where everything went."""
    from loopexp.track.tracking import ui_hint  # noqa: PLC0415 (fast --help)

    results = outcome.results
    d = results.decision
    console.print(results.comparisons_table([d.primary_metric], show_probability=False))
    if d.guardrails:
        console.print(_guardrail_table(d.guardrails))
    console.print(_decision_table(outcome))
    if outcome.reused:
        console.print(
            "[bold]Already analysed:[/] this spec and data were logged before; nothing was "
            "redone and the next spec was left as it is (--force analyses again).",
            soft_wrap=True,
        )
    lines: list[tuple[str, object]] = [
        ("Next spec", outcome.next_spec_path or f"not written: {outcome.next_spec_note}"),
        ("MLflow run", outcome.run_id),
        ("HTML report", _report_path(outcome)),
        ("Outputs", outcome.run_dir or outcome.output_dir),
    ]
    data = results.data
    if data.quarantined:
        quarantine = outcome.output_dir / "quarantine.parquet"  # the published copy
        if not quarantine.exists() and outcome.run_dir:
            quarantine = outcome.run_dir / "quarantine.parquet"
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in data.quarantine_reasons.items())
        text = f"{data.quarantined:,} of {data.events:,} events ({reasons}) → {quarantine}"
        lines.append(("Quarantined", text))
    else:
        lines.append(("Quarantined", f"none of {data.events:,} events"))
    hint = ui_hint(outcome.tracking_uri, outcome.experiment_id, results.experiment.campaign)
    lines.append(("Open the UI", hint))
    for label, value in lines:
        console.print(f"[bold]{label}:[/] {escape(str(value))}", soft_wrap=True)
