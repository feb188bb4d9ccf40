"""``loopexp validate``, ``init`` and ``plan``: write a spec, check it, size the send."""

from __future__ import annotations

import glob
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from loopexp.cli.common import console, load
from loopexp.cli.errors import fail

if TYPE_CHECKING:
    from loopexp.design.spec import ExperimentSpec


class TestTypeChoice(StrEnum):
    """The values of :class:`loopexp.design.parts.TestType`, for ``init --type``.

    Spelled here because importing the spec models loads pydantic and pyarrow (~0.5 s) and
    ``loopexp --help`` must start at once; ``tests/test_cli_startup.py`` checks both agree.
    """

    __test__ = False  # not a pytest class

    SUBJECT_LINE = "subject_line"
    CONTENT = "content"
    SEND_TIME = "send_time"
    PREHEADER = "preheader"
    FROM_NAME = "from_name"
    MULTIVARIATE = "multivariate"
    FLOW = "flow"


def validate(
    specs: Annotated[list[Path], typer.Argument(help="spec files (YAML) to check")],
) -> None:
    """Check experiment specs; print each problem with its file, line and field."""
    from loopexp.design.spec import SpecError, load_spec  # noqa: PLC0415 (fast --help)

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


def init(
    path: Annotated[
        Path | None,
        typer.Argument(help="spec file to write [default: experiments/<campaign>-<type>.yaml]"),
    ] = None,
    test_type: Annotated[
        TestTypeChoice, typer.Option("--type", help="what the variants differ in")
    ] = TestTypeChoice.SUBJECT_LINE,
    campaign: Annotated[
        str | None,
        typer.Option(help="campaign name (letters, digits, . _ -) [default: PATH's name]"),
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite PATH if it exists")] = False,
) -> None:
    """Write a commented starter spec for a new experiment, ready to edit and validate."""
    from loopexp.design.parts import TestType  # noqa: PLC0415 (fast --help)
    from loopexp.design.resources import starter_spec  # noqa: PLC0415 (fast --help)

    kind = TestType(test_type.value)
    campaign = campaign or (path.stem if path else "my-campaign")
    path = path or Path("experiments") / f"{campaign}-{kind.value.replace('_', '-')}.yaml"
    if path.exists() and not force:
        fail(f"{path} exists; choose another PATH or pass --force to overwrite it")
    try:
        text = starter_spec(kind, campaign)
    except ValueError as exc:  # a SpecError too
        fail(f"{exc}; choose one with --campaign NAME")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    console.print(
        f"[green]✓[/] wrote a {kind.value} spec to {path}\n"
        f"Edit the variants, audience and metrics (each field is commented), then:\n"
        f"  loopexp validate {path}\n  loopexp plan {path} --baseline 0.04",
        highlight=False,
    )


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
    write: Annotated[
        bool,
        typer.Option(
            "--write", help="write planned_recipients_per_variant into the spec (comments kept)"
        ),
    ] = False,
) -> None:
    """Recipients per variant to detect the spec's MDE, days of sending, the audience's MDE.

    The same plan as notebooks/plan_experiment.ipynb and ``loopexp.design.plan.plan_experiment``.
    """
    from loopexp.design.plan import plan_experiment  # noqa: PLC0415 (scipy: fast --help)
    from loopexp.learn.history import baseline_from_history  # noqa: PLC0415 (fast --help)
    from loopexp.report.views import plan_summary  # noqa: PLC0415 (fast --help)

    spec = load(spec_path)
    paths = sorted({p for pattern in history or [] for p in glob.glob(pattern)})
    if history and not paths:
        fail(f"--history {' '.join(history)} matches no file")
    if baseline is None and not paths:
        fail("give the control's expected rate with --baseline (e.g. 0.04) or --history FILES")
    try:
        if paths:
            rate = baseline_from_history(spec, paths)
            source = f"pooled from {len(paths)} earlier send(s)"
        else:
            rate, source = float(baseline), "as given"
        if spec.flow is not None:  # a flow test: entries a day, the window, daily looks (issue 26)
            _plan_flow(spec, rate, per_day)
            return
        result = plan_experiment(spec, rate, source, per_day, audience)
    except ValueError as exc:
        fail(f"--baseline {baseline:g}: {exc}" if baseline is not None and not paths else str(exc))
    console.print(
        f"{spec.primary_metric}: baseline {result.baseline:.2%}, MDE {result.mde_relative:+.0%} "
        f"relative, power {result.power:.0%}, alpha {result.alpha_per_comparison:.3g} per "
        f"comparison → [bold]{result.per_variant:,}[/] per variant, {result.total:,} in all"
    )
    console.print(plan_summary(result), highlight=False)
    if json_path:
        console.print(f"plan written to {result.write_json(json_path)}", highlight=False)
    if write:
        from loopexp.design.resources import write_planned_sample  # noqa: PLC0415

        note = (
            f"loopexp plan: baseline {result.baseline:.2%} {source}, MDE {result.mde_relative:+.0%}"
        )
        write_planned_sample(spec_path, result.per_variant, note)
        console.print(
            f"planned_recipients_per_variant: {result.per_variant:,} written to {spec_path}",
            highlight=False,
        )


def _plan_flow(spec: ExperimentSpec, rate: float, per_day: int | None) -> None:
    from loopexp.design.flow_plan import plan_flow_spec  # noqa: PLC0415 (fast --help)

    if per_day is None:
        fail("a flow test is planned from its entry rate: give --per-day (entries a day)")
    plan = plan_flow_spec(spec, rate, per_day)
    console.print(
        f"{spec.primary_metric} within {plan.window_days:g} days of entry: baseline {rate:.2%}, "
        f"MDE {plan.mde_relative:+.0%} relative, power {plan.power:.0%}"
        + (" (read daily, always-valid)" if plan.sequential else "")
        + f" → [bold]{plan.per_arm:,}[/] per arm, {plan.total:,} entries: "
        f"{plan.entry_days:.1f} days of entries + the {plan.window_days:g}-day window = "
        f"[bold]{plan.days:.1f} days[/]"
    )
