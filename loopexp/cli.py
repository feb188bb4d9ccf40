"""The ``loopexp`` command: a thin shell over the Python API, for people and for schedulers."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loopexp.assign import assign, write_send_lists
from loopexp.keys import redact_addresses
from loopexp.metrics.engine import EventsError
from loopexp.pipeline import IterationOutcome, run_iteration
from loopexp.plan import sample_size_per_variant
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
    recipients: Annotated[Path, typer.Option(help="CSV/Parquet with recipient_key, segment")],
    out: Annotated[Path, typer.Option(help="folder for assignment.parquet and send lists")],
) -> None:
    """Assign recipients to variants (salted hash) and write one send list per variant."""
    spec = _load(spec_path)
    table = (
        pd.read_parquet(recipients) if recipients.suffix == ".parquet" else pd.read_csv(recipients)
    )
    try:
        assignment = assign(table, spec)
    except ValueError as exc:
        _fail(f"{recipients}: {exc}")
    out.mkdir(parents=True, exist_ok=True)
    assignment.to_parquet(out / "assignment.parquet", index=False)
    lists = write_send_lists(assignment, out)
    for variant, path in lists.items():
        console.print(f"{variant}: {path}")
    console.print(assignment["variant_id"].value_counts().sort_index().to_string())


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
    enrolment_days: Annotated[
        int | None,
        typer.Option(help="lifecycle flow: recipients enter evenly over this many days"),
    ] = None,
    as_of_day: Annotated[
        float | None,
        typer.Option(help="with --enrolment-days: write what a look this many days in sees"),
    ] = None,
    pre_period_days: Annotated[
        int, typer.Option(help="simulate engagement history (covariates.parquet) over N days")
    ] = 0,
) -> None:
    """Simulate a send of a spec with known true effects (for trials, tests and demos)."""
    spec = _load(spec_path)
    effects = TrueEffects(open=_parse_effects(open_lift or []))
    campaign = simulate_campaign(
        spec,
        recipients,
        effects,
        seed=seed,
        enrolment_days=enrolment_days,
        pre_period_days=pre_period_days,
    )
    if as_of_day is not None:
        start = campaign.events["ts"].min()
        campaign = campaign.as_of(start + timedelta(days=as_of_day))
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
