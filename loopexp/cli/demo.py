"""``loopexp simulate`` and ``demo``: campaigns with known true effects, and the loop on them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from loopexp.cli.common import TrackingOpt, console, load, progress, quiet_mlflow
from loopexp.cli.errors import fail
from loopexp.cli.run import print_outcome, run_iteration

if TYPE_CHECKING:
    from loopexp.analysis.results import Status


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
    from loopexp.sim.simulate import TrueEffects, simulate_campaign  # noqa: PLC0415 (fast --help)

    spec = load(spec_path)
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


def _parse_effects(items: list[str]) -> dict[str, float]:
    parsed = {}
    for item in items:
        variant, _, value = item.partition("=")
        try:
            parsed[variant] = float(value)
        except ValueError:
            fail(f"effect {item!r} should look like variant=1.2")
    return parsed


def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo's data and outputs")] = Path(
        "runs/demo"
    ),
    recipients: Annotated[int, typer.Option(help="recipients in the simulated campaign")] = 60_000,
    seed: Annotated[int, typer.Option(help="random seed of the simulation")] = 7,
    spec_path: Annotated[
        Path | None,
        typer.Option("--spec", help="spec to simulate", show_default="the shipped demo spec"),
    ] = None,
    tracking_uri: TrackingOpt = None,
    iterations: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="iterations to run hands-off: 1 = one iteration of the subject-line demo; more "
            "= the closed-loop demo (truth changes each iteration, send time learned, report)",
        ),
    ] = 1,
    adaptive: Annotated[
        bool,
        typer.Option(
            help="with --iterations: Thompson-sampling weights for each next spec (control "
            "share fixed, 5% floor per challenger)"
        ),
    ] = False,
) -> None:
    """Run the loop on a simulated campaign: one iteration, or several hands-off."""
    from loopexp.design.resources import example_spec_path  # noqa: PLC0415 (fast --help)
    from loopexp.sim.simulate import DEMO_EFFECTS, simulate_campaign  # noqa: PLC0415

    if iterations > 1:
        _demo_loop(out, recipients, seed, spec_path, tracking_uri, iterations, adaptive)
        return
    spec_path = spec_path or example_spec_path("subject_line_demo.yaml")  # shipped in the wheel
    spec = load(spec_path)
    if spec.flow is not None:  # a flow test: its own simulator and known truth (issue 26)
        _demo_flow(spec_path, out, recipients, seed, tracking_uri)
        return
    console.print(
        f"Simulating {recipients:,} recipients for [bold]{escape(spec.name)}[/]; the truth: "
        f"{DEMO_EFFECTS.describe()}"
    )
    campaign = simulate_campaign(spec, recipients, DEMO_EFFECTS, seed=seed)
    events, assignment = campaign.write(out / "data")
    console.print(f"{len(campaign.events):,} events written to {events}")
    outcome = run_iteration(spec_path, events, assignment, out / "analysis", tracking_uri, out)
    print_outcome(outcome)


def _demo_flow(
    spec_path: Path, out: Path, recipients: int, seed: int, tracking_uri: str | None
) -> None:
    from loopexp.sim.flow_demo import run_flow_demo  # noqa: PLC0415 (only this command needs it)

    quiet_mlflow()
    demo = run_flow_demo(spec_path, out, recipients, seed, tracking_uri, progress=progress)
    console.print(f"Simulated truth: {escape(demo.truth.describe())}")
    print_outcome(demo.outcome)
    status, winner = demo.expected
    verdict = (
        "[green]decided the simulated truth[/]" if demo.decided_the_truth else "[red]missed it[/]"
    )
    console.print(f"Expected {status}{f' ({winner})' if winner else ''}: {verdict}")


def _demo_loop(
    out: Path,
    recipients: int,
    seed: int,
    spec_path: Path | None,
    tracking_uri: str | None,
    iterations: int,
    adaptive: bool,
) -> None:
    from loopexp.sim.demo import run_demo_loop  # noqa: PLC0415 (only this command needs it)
    from loopexp.track.tracking import ui_hint  # noqa: PLC0415 (fast --help)

    quiet_mlflow()
    demo = run_demo_loop(
        out,
        iterations,
        recipients,
        seed,
        tracking_uri,
        spec_path,
        progress=progress,
        adaptive=adaptive,
    )
    rows, windows = [], []
    for it, record in zip(demo.iterations, demo.report.iterations, strict=False):
        d = it.outcome.results.decision
        lift = (
            f"{d.rel_lift:+.1%} ({d.rel_ci_low:+.1%} to {d.rel_ci_high:+.1%})"
            if d.winner
            and d.rel_lift is not None
            and d.rel_ci_low is not None
            and d.rel_ci_high is not None
            else "—"
        )
        nxt = it.next_spec_path.name if it.next_spec_path else "none (see Next)"
        rows.append((str(record.iteration), d.status, d.winner or "—", lift, nxt))
        if record.send_windows:
            text = ", ".join(f"{k} {v}" for k, v in sorted(record.send_windows.items()))
            windows.append(f"test {record.iteration}: {text}")
    console.print(loop_table(rows))
    for line in windows:
        console.print(f"[bold]Send windows[/] {escape(line)}", soft_wrap=True)
    c, cs = demo.report.cumulative, demo.report.cumulative_shrunk
    if c.value is not None:
        console.print(
            f"[bold]Cumulative lift of the control over iteration 1:[/] {c.value:+.1%} "
            f"({100 * c.level:.3g}% CI {c.low:+.1%} to {c.high:+.1%}); "
            f"shrunk for winner's curse {cs.value:+.1%}"
        )
    for step in demo.report.next_steps:
        console.print(f"[bold]Next:[/] {escape(step)}", soft_wrap=True)
    console.print(f"[bold]Closed-loop report:[/] {demo.report_path}", soft_wrap=True)
    console.print(f"[bold]Report run:[/] {demo.report_run_id}")
    last = demo.iterations[-1].outcome
    hint = ui_hint(last.tracking_uri, last.experiment_id, demo.report.campaign)
    console.print(f"[bold]Open the UI:[/] {escape(hint)}", soft_wrap=True)


def loop_table(rows: list[tuple[str, Status, str, str, str]]) -> Table:
    """The loop, test by test, readable at 80 columns: (test, decision, winner, lift, next spec).

    Short cells that never wrap, a long winner's name folded, the next spec by its file name;
    the send windows are printed below the table (long cells cut a table to a word per line).
    """
    from loopexp.report.plain import decision_words  # noqa: PLC0415 (fast --help)

    table = Table(title="The loop, iteration by iteration", box=box.ROUNDED)
    table.add_column("test", no_wrap=True)
    table.add_column("decision", max_width=22, overflow="fold")
    table.add_column("winner", max_width=14, overflow="fold")
    table.add_column("lift (CI)", no_wrap=True)
    table.add_column("next spec", overflow="fold")
    for test, status, winner, lift, nxt in rows:
        table.add_row(test, escape(decision_words(status)), escape(winner), lift, escape(nxt))
    return table
