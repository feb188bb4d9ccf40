"""``loopexp policy``: learn per-recipient policies from a randomised send and value them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loopexp.cli.common import console, load


def policy(
    spec: Annotated[Path, typer.Argument(help="the spec the send was made with")],
    events: Annotated[str, typer.Option(help="canonical events (Parquet/CSV path or glob)")],
    assignment: Annotated[str, typer.Option(help="the send's assignment.parquet")],
    features: Annotated[
        Path | None,
        typer.Option(help="feature table (recipient_key + numeric pre-treatment features)"),
    ] = None,
    history: Annotated[
        str | None,
        typer.Option(help="events before the send, to compute recency, frequency, tenure, …"),
    ] = None,
    as_of: Annotated[
        datetime | None, typer.Option(help="the send date: history events before it are used")
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=20, help="cross-fitting folds")] = 5,
    seed: Annotated[int, typer.Option(help="seed of the fold split")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Candidate policies (single arm, per segment, tree) valued on held-out recipients (AIPW)."""
    from loopexp.learn.policy.files import learn_policy  # noqa: PLC0415 (scikit-learn, DuckDB)

    loaded = load(spec)
    when = None
    if as_of is not None:
        when = as_of if as_of.tzinfo else as_of.replace(tzinfo=datetime.now().astimezone().tzinfo)
    report, notes = learn_policy(
        loaded, events, assignment, features, history, when, folds=folds, seed=seed
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    for note in notes:
        console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
    console.print(f"[bold]{'candidate':<24} {'value (AIPW)':>24} {'gain vs single arm':>30}[/]")
    for c in report.candidates:
        value = f"{c.aipw.value:.4f} [{c.aipw.ci_low:.4f}, {c.aipw.ci_high:.4f}]"
        gain = f"{c.gain.value:+.4f} [{c.gain.ci_low:+.4f}, {c.gain.ci_high:+.4f}]"
        console.print(f"{escape(c.name):<24} {value:>24} {gain:>30}")
    console.print(f"[bold]Chosen:[/] {escape(report.chosen.name)}: {escape(report.reason)}")
    for rule in report.chosen.rules:
        console.print(f"  {escape(rule.words())}", soft_wrap=True)
    plan = report.plan_words()  # issue 27: the procedure's own plan
    if plan is not None:
        console.print(f"Plan: {plan}", soft_wrap=True)
