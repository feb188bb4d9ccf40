"""The ``loopexp`` command: a thin shell over the Python API, for people and for schedulers."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from loopexp.assign import assign, write_send_lists
from loopexp.metrics.engine import EventsError
from loopexp.pipeline import IterationOutcome, run_iteration
from loopexp.plan import baseline_from_history, plan_experiment
from loopexp.report import comparisons_table, plan_summary
from loopexp.resources import example_spec_path, starter_spec
from loopexp.simulate import DEMO_EFFECTS, TrueEffects, simulate_campaign
from loopexp.spec import SpecError, TestType, load_spec
from loopexp.tracking import ui_hint

app = typer.Typer(
    help="Closed-loop email experimentation: define, assign, measure, analyse, decide, iterate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()

DEMO_SPEC = example_spec_path("subject_line_demo.yaml")  # shipped in the wheel

TrackingOpt = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI [default: sqlite:///mlflow.db in this folder]"),
]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
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
            console.print(f"[red]✗[/] {exc}")
            continue
        console.print(
            f"[green]✓[/] {path}: {spec.name} iteration {spec.iteration}, "
            f"{len(spec.variants)} variants, primary metric {spec.primary_metric}"
        )
    if bad:
        raise typer.Exit(code=1)


@app.command()
def init(
    path: Annotated[
        Path | None,
        typer.Argument(help="spec file to write [default: experiments/<campaign>-<type>.yaml]"),
    ] = None,
    test_type: Annotated[
        TestType, typer.Option("--type", help="what the variants differ in")
    ] = TestType.SUBJECT_LINE,
    campaign: Annotated[
        str | None,
        typer.Option(help="campaign name (letters, digits, . _ -) [default: PATH's name]"),
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite PATH if it exists")] = False,
) -> None:
    """Write a commented starter spec for a new experiment, ready to edit and validate."""
    campaign = campaign or (path.stem if path else "my-campaign")
    path = path or Path("experiments") / f"{campaign}-{test_type.value.replace('_', '-')}.yaml"
    if path.exists() and not force:
        _fail(f"{path} exists; choose another PATH or pass --force to overwrite it")
    try:
        text = starter_spec(test_type, campaign)
    except ValueError as exc:  # a SpecError too
        _fail(f"{exc}; choose one with --campaign NAME")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    console.print(
        f"[green]✓[/] wrote a {test_type.value} spec to {path}\n"
        f"Edit the variants, audience and metrics (each field is commented), then:\n"
        f"  loopexp validate {path}\n  loopexp plan {path} --baseline 0.04",
        highlight=False,
    )


@app.command()
def plan(
    spec_path: Annotated[Path, typer.Argument(help="spec file (YAML)")],
    baseline: Annotated[
        float | None, typer.Option(help="expected control rate of the primary metric, e.g. 0.04")
    ] = None,
    history: Annotated[
        list[str] | None,
        typer.Option(help="earlier sends' results.json (globs allowed): their control rate"),
    ] = None,
    per_day: Annotated[
        int | None, typer.Option(help="recipients mailed per day: gives the days of sending")
    ] = None,
    audience: Annotated[
        int | None, typer.Option(help="recipients available: gives the smallest detectable lift")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the plan as JSON to this file")
    ] = None,
) -> None:
    """Recipients per variant to detect the spec's MDE, days of sending, the audience's MDE.

    The same plan as notebooks/plan_experiment.ipynb and ``loopexp.plan.plan_experiment``.
    """
    spec = _load(spec_path)
    paths = sorted({p for pattern in history or [] for p in glob.glob(pattern)})
    if history and not paths:
        _fail(f"--history {' '.join(history)} matches no file")
    if baseline is None and not paths:
        _fail("give the control's expected rate with --baseline (e.g. 0.04) or --history FILES")
    try:
        if paths:
            rate = baseline_from_history(spec, paths)
            source = f"pooled from {len(paths)} earlier send(s)"
        else:
            rate, source = float(baseline), "as given"
        result = plan_experiment(spec, rate, source, per_day, audience)
    except ValueError as exc:
        _fail(str(exc))
    console.print(
        f"{spec.primary_metric}: baseline {result.baseline:.2%}, MDE {result.mde_relative:+.0%} "
        f"relative, power {result.power:.0%}, alpha {result.alpha_per_comparison:.3g} per "
        f"comparison → [bold]{result.per_variant:,}[/] per variant, {result.total:,} in all"
    )
    console.print(plan_summary(result), highlight=False)
    if json_path:
        console.print(f"plan written to {result.write_json(json_path)}", highlight=False)


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
    out = out or Path("runs") / f"{spec.name}-iter{spec.iteration}"
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
        f"Simulating {recipients:,} recipients for [bold]{spec.name}[/]; the truth: "
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
        console.print(
            f"[bold red]the analysis notebook failed[/] in cell {exc.exec_count}: "
            f"{exc.ename}: {exc.evalue}\nThe partly executed notebook is in {out}; "
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
    table.add_row("reasons", "\n".join(f"• {r}" for r in d.reasons))
    console.print(table)
    for label, value in (
        ("Next spec", outcome.next_spec_path or f"not written: {outcome.next_spec_note}"),
        ("MLflow run", outcome.run_id),
        ("HTML report", outcome.report_path),
        ("Open the UI", ui_hint(outcome.tracking_uri, outcome.experiment_id)),
    ):
        console.print(f"[bold]{label}:[/] {value}", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    app()
