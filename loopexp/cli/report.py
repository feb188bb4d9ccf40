"""``loopexp report``: a campaign's closed-loop report, every iteration read back from MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loopexp.cli.common import TrackingOpt, console, quiet_mlflow


def report(
    campaign: Annotated[str, typer.Option(help="the campaign (MLflow experiment) to report on")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write", show_default="<campaign>-report.html")
    ] = None,
    tracking_uri: TrackingOpt = None,
    log: Annotated[
        bool, typer.Option(help="log the report to a report run in the campaign's experiment")
    ] = True,
) -> None:
    """The closed-loop report of a campaign: every iteration read back from MLflow."""
    from loopexp.design.spec import safe_slug  # noqa: PLC0415 (fast --help)
    from loopexp.report.closed_loop import write_html  # noqa: PLC0415 (matplotlib: fast --help)
    from loopexp.report.plain import decision_words  # noqa: PLC0415 (fast --help)
    from loopexp.track.closed_loop import (  # noqa: PLC0415 (MLflow)
        build_report,
        campaign_runs,
        campaign_subjects,
        log_report,
    )
    from loopexp.track.tracking import resolve_tracking_uri  # noqa: PLC0415 (fast --help)

    quiet_mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    runs = campaign_runs(campaign, uri)  # one search serves the report and the subject lines
    built = build_report(campaign, uri, runs=runs)
    subjects = campaign_subjects(campaign, uri, runs=runs)
    path = write_html(built, out or Path(f"{safe_slug(campaign)}-report.html"), subjects=subjects)
    console.print(f"[bold]{len(built.iterations)} iteration(s)[/] of {escape(campaign)}")
    for record in built.iterations:
        console.print(
            f"  {record.iteration}: {decision_words(record.status)}"
            + (f" ({escape(record.winner)})" if record.winner else ""),
            soft_wrap=True,
        )
    for step in built.next_steps:
        console.print(f"[bold]Next:[/] {escape(step)}", soft_wrap=True)
    console.print(f"[bold]Report:[/] {path}")
    if log:
        console.print(f"[bold]Report run:[/] {log_report(built, path)}")
