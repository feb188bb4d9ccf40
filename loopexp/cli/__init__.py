"""The ``loopexp`` command: a thin shell over the Python API, for people and for schedulers."""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import click
import duckdb
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loopexp.analysis.results import GuardrailResult, Status
from loopexp.assignment.assign import AssignmentSummary, assign_recipients
from loopexp.assignment.recipients import RecipientsError, read_recipients, read_table
from loopexp.core import config
from loopexp.core import tags as tag
from loopexp.core.keys import HashKey, HashKeyError, load_hash_key, redact_addresses
from loopexp.core.parallel import available_workers
from loopexp.design.parts import TestType
from loopexp.design.plan import plan_experiment
from loopexp.design.resources import example_spec_path, starter_spec
from loopexp.design.spec import SpecError, load_spec, safe_slug
from loopexp.events.adapters.base import IGNORED_TYPE
from loopexp.events.ingest import FORMATS, IngestError, IngestSummary, ingest_to_canonical
from loopexp.learn.history import baseline_from_history
from loopexp.metrics.engine import ALL_SEGMENTS, EventsError
from loopexp.report.views import plan_summary
from loopexp.run.lock import ExperimentBusyError
from loopexp.run.notebook import NotebookFailedError
from loopexp.run.pipeline import IterationOutcome, NotLoggedError, run_iteration, upload
from loopexp.sim.simulate import DEMO_EFFECTS, TrueEffects, simulate_campaign
from loopexp.track.tracking import (
    TrackingUnavailableError,
    experiment_id_of,
    experiment_url,
    is_remote,
    list_runs,
    resolve_tracking_uri,
    ui_hint,
)

#: Exit codes, for schedulers (documented in ``loopexp --help`` and the README).
EXIT_DECIDED = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2
EXIT_KEEP_TESTING = 3
EXIT_INVALID = 4
EXIT_BUSY = 5

DECISION_EXIT = {
    Status.SHIP: EXIT_DECIDED,
    Status.NO_DIFFERENCE: EXIT_DECIDED,
    Status.GUARDRAIL_VETO: EXIT_DECIDED,
    Status.KEEP_TESTING: EXIT_KEEP_TESTING,
    Status.INVALID_SRM: EXIT_INVALID,
}

EXIT_CODES_HELP = (
    "Exit codes of `run` and `upload`: 0 decided (ship, no difference or guardrail veto; the "
    "next spec is written), 3 keep testing, 4 invalid split (sample-ratio mismatch: fix the "
    "send), 1 failure (a notebook cell failed: MLflow run FAILED, no decision; or the tracking "
    "server is down: results kept locally for `loopexp upload`), 2 bad input (spec, files, "
    "columns, another iteration's assignment; nothing was run), 5 another run of the experiment "
    "holds its lock."
)

#: Errors in what the user gave us: one clear line and exit code 2, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    SpecError,
    EventsError,
    OSError,  # FileNotFoundError, IsADirectoryError, PermissionError, ...
    ValueError,  # bad numbers, unparseable CSV (pandas/pyarrow errors derive from it)
    duckdb.Error,
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; turn known errors into a clear message and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise
        except NotebookFailedError as exc:
            run_id = exc.run_id
            if exc.ename in ("EventsError", "QuarantineError", "SpecError"):  # bad input, not a bug
                _error(
                    f"{redact_addresses(exc.evalue.strip())}\n(the partly executed notebook is "
                    f"{exc.notebook}"
                    + (f"; MLflow run {run_id} is marked FAILED" if run_id else "")
                    + ")",
                    EXIT_INPUT,
                )
            _error(
                f"the analysis notebook failed in cell {exc.cell}: {exc.ename}: "
                f"{redact_addresses(exc.evalue.strip()[:500])}\nThe partly executed notebook is "
                f"{exc.notebook}; "
                "open it to see the traceback."
                + (f" MLflow run {run_id} is marked FAILED." if run_id else "")
                + " No decision was written.",
                EXIT_FAILURE,
            )
        except NotLoggedError as exc:
            _error(str(exc), EXIT_FAILURE)
        except TrackingUnavailableError as exc:
            _error(f"{exc}. Check the server (or --tracking-uri) and run again.", EXIT_FAILURE)
        except ExperimentBusyError as exc:
            _error(str(exc), EXIT_BUSY)
        except USER_ERRORS as exc:
            _error(redact_addresses(str(exc)), EXIT_INPUT)
        except Exception as exc:
            if config.debug():
                raise
            _error(
                f"unexpected {type(exc).__name__}: {exc} (this is a bug in loopexp: run again "
                "with LOOPEXP_DEBUG=1 for the traceback, and report it)",
                EXIT_FAILURE,
            )

    return wrapper


class _App(typer.Typer):
    """A Typer app whose every command goes through :func:`_guarded`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        register = super().command(*args, **kwargs)

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            register(_guarded(func))
            return func

        return decorator


app = _App(
    help="Closed-loop email experimentation: define, assign, measure, analyse, decide, iterate.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

DEMO_SPEC = example_spec_path("subject_line_demo.yaml")  # shipped in the wheel

TrackingOpt = Annotated[
    str | None,
    typer.Option(
        help="MLflow tracking URI (a local SQLite store or http://host:port)",
        show_default="sqlite:///mlflow.db in this folder",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="analyse and log again even if this spec and data were")
]
LockTimeoutOpt = Annotated[
    float, typer.Option(help="seconds to wait for another run of the experiment to end")
]


def _error(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=code)


def _fail(message: str) -> None:
    _error(message, EXIT_INPUT)


def _progress(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}", soft_wrap=True)


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

    The same plan as notebooks/plan_experiment.ipynb and ``loopexp.design.plan.plan_experiment``.
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
        _fail(f"--baseline {baseline:g}: {exc}" if baseline is not None and not paths else str(exc))
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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="print the seconds of each phase (on stderr)")
    ] = False,
) -> None:
    """Assign recipients to variants (salted hash); write send lists, exclusions and a summary.

    Every input row is accounted for: assigned, or excluded with a reason (missing key, suppressed,
    no consent, unmapped segment, outside the audience, recently tested, duplicate key).
    """
    spec = _load(spec_path)
    try:
        key = _hash_key(key_file, demo_key)
        started = time.perf_counter()
        table = read_recipients(recipients)
        read_seconds = time.perf_counter() - started
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
    if verbose:  # on stderr, so that --json output stays parseable
        phases = {"read": read_seconds, **result.timings}
        err_console.print(
            "seconds: "
            + ", ".join(f"{name} {sec:.2f}" for name, sec in phases.items())
            + f" (hashing workers: {available_workers()})"
        )
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
            f"glob) ingested into <out>/ingest first: {', '.join(FORMATS)}"
        ),
    ] = "canonical",
    force: ForceOpt = False,
    lock_timeout: LockTimeoutOpt = 600.0,
) -> None:
    """Analyse one iteration (papermill notebook), log it to MLflow, write the next spec.

    Idempotent: the same spec on the same data reports the run already logged (no second run,
    no rewritten next spec) unless --force. One run per experiment at a time (a lock).
    """
    spec = _load(spec_path)
    out = out or Path("runs") / spec.slug  # a safe slug: a name like ../../x stays in runs/
    if events is None:
        if spec.events is None:
            _fail(
                f"{spec_path}: no events: give --events, or name the ESP export folder in the "
                "spec, e.g. `events: {path: exports/sendgrid/, format: auto}` (relative to the "
                "spec's folder)"
            )
        events, events_format = spec.events.resolve(spec_path), spec.events.format
        if not events.exists() and not any(ch in str(events) for ch in "*?["):
            _fail(
                f"{events}: the export folder named in {spec_path} (events.path "
                f"{spec.events.path!r}, relative to the spec's folder) does not exist"
            )
        if events_format == "canonical" and events.is_dir():
            events = events / "*.parquet"
    if events_format != "canonical":
        events = _ingest_for_run(events, out / "ingest", events_format, spec)
    outcome = _run(
        spec_path, events, assignment, out, tracking_uri, next_spec_dir, force, lock_timeout
    )
    _print_outcome(outcome)
    raise typer.Exit(code=DECISION_EXIT.get(outcome.results.decision.status, EXIT_DECIDED))


@app.command("upload")
def upload_cmd(
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
    _quiet_mlflow()
    outcome = upload(folder, tracking_uri, force, lock_timeout, progress=_progress)
    _print_outcome(outcome)
    raise typer.Exit(code=DECISION_EXIT.get(outcome.results.decision.status, EXIT_DECIDED))


@app.command()
def runs(
    campaign: Annotated[str, typer.Option(help="campaign (the MLflow experiment)")],
    tracking_uri: TrackingOpt = None,
) -> None:
    """List a campaign's iterations with their decisions."""
    _quiet_mlflow()
    uri = resolve_tracking_uri(tracking_uri)
    found = list_runs(campaign, uri)
    if not found:
        console.print(f"no runs of campaign {escape(campaign)!r} in {uri}")
        return
    table = Table(title=f"{campaign} · {len(found)} runs", box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("iter", "started (UTC)", "status", "run", "summary"):
        table.add_column(col, no_wrap=col != "summary", overflow="fold")
    for r in found:
        tags = r.data.tags
        started = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.info.start_time / 1000))
        table.add_row(
            tags.get(tag.ITERATION, "?"),
            started,
            r.info.status,
            escape(r.info.run_name or ""),
            escape(tags.get(tag.SUMMARY) or tags.get(tag.FAILURE, "")),
        )
        table.add_row("", "", "", f"[dim]{r.info.run_id}[/]", "")
    console.print(table)
    console.print(f"Open the UI: {ui_hint(uri, found[0].info.experiment_id)}", soft_wrap=True)


@app.command()
def ui(
    tracking_uri: TrackingOpt = None,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    campaign: Annotated[str | None, typer.Option(help="print the link to this campaign")] = None,
) -> None:
    """Start the MLflow UI (`mlflow server`, 1 worker, jobs off) on 127.0.0.1 and print the link."""
    uri = resolve_tracking_uri(tracking_uri)
    if is_remote(uri):
        console.print(f"{uri} is a tracking server already: open {experiment_url(uri)}")
        return
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    if store is not None:
        command += ["--artifacts-destination", str(store.parent / "mlartifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    console.print(f"starting the MLflow UI on {url} against {uri} …")
    # Its own process group: stopping `loopexp ui` (Ctrl-C, SIGTERM) stops the server's workers too.
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None:
                _error(f"mlflow server exited with code {proc.returncode}", EXIT_FAILURE)
            if time.monotonic() > deadline:
                _error(f"mlflow server did not answer on {url} within 120 s", EXIT_FAILURE)
            time.sleep(0.3)
        experiment_id = experiment_id_of(campaign, url) if campaign else None
        console.print(f"MLflow UI: {experiment_url(url, experiment_id)}  (Ctrl-C stops it)")
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@app.command("ingest")
def ingest_cmd(
    paths: Annotated[list[Path], typer.Argument(help="export files, folders or globs")],
    out: Annotated[Path, typer.Option(help="folder for events.parquet and quarantine.parquet")],
    fmt: Annotated[str, typer.Option("--format", help=f"one of {', '.join(FORMATS)}")] = "auto",
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
    from loopexp.core.keys import HashKeyError, load_hash_key  # noqa: PLC0415
    from loopexp.events.ingest import ingest  # noqa: PLC0415

    _check_format(fmt)
    config = _load(spec_path).ingest if spec_path else None
    try:
        key = load_hash_key(key_file, allow_demo=demo_key)
        summary = ingest(paths, out, key=key, fmt=fmt, config=config, assignment=assignment)
    except (IngestError, HashKeyError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
    if json_out:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_ingest(summary)
    if strict and summary.errors:
        Console(stderr=True).print(
            f"[bold red]--strict:[/] {summary.errors:,} record(s) quarantined as errors; see "
            f"{summary.quarantine_path} (column reason) and fix the export or the mapping"
        )
        raise typer.Exit(code=1)


def _ingest_for_run(events: Path, folder: Path, fmt: str, spec) -> Path:
    from loopexp.core.keys import HashKeyError, load_hash_key  # noqa: PLC0415

    _check_format(fmt)
    try:
        path = ingest_to_canonical(
            [events],
            folder,
            key=load_hash_key(),
            fmt=fmt,
            config=spec.ingest,
            memory_limit=spec.data.memory_limit,
            temp_directory=spec.data.temp_directory,
        )
    except (IngestError, HashKeyError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
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
    return path


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        _fail(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _print_ingest(summary: IngestSummary) -> None:
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
    table.add_row("outputs", f"{summary.events_path}\n{summary.quarantine_path}")
    console.print(table)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


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
    from loopexp.analysis.analyze import spec_caps  # noqa: PLC0415
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
            caps=spec_caps(spec),  # decision.cap_percentile, on either input (as in `run`)
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


@app.command()
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
    if iterations > 1:
        _demo_loop(out, recipients, seed, spec_path, tracking_uri, iterations, adaptive)
        return
    spec_path = spec_path or DEMO_SPEC
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

    _quiet_mlflow()
    demo = run_demo_loop(
        out,
        iterations,
        recipients,
        seed,
        tracking_uri,
        spec_path,
        progress=_progress,
        adaptive=adaptive,
    )
    table = Table(title="The loop, iteration by iteration", box=box.ROUNDED)
    for column in ("iteration", "decision", "winner", "lift (CI)", "send windows", "next spec"):
        table.add_column(column)
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
        windows = ", ".join(f"{k} {v}" for k, v in sorted(record.send_windows.items())) or "—"
        table.add_row(
            str(record.iteration),
            d.status.value,
            d.winner or "—",
            lift,
            windows,
            str(it.next_spec_path or f"none: {it.next_spec_note}"),
        )
    console.print(table)
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


@app.command()
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
    from loopexp.report.closed_loop import write_html  # noqa: PLC0415
    from loopexp.track.closed_loop import build_report, log_report  # noqa: PLC0415

    _quiet_mlflow()
    built = build_report(campaign, resolve_tracking_uri(tracking_uri))
    path = write_html(built, out or Path(f"{safe_slug(campaign)}-report.html"))
    console.print(f"[bold]{len(built.iterations)} iteration(s)[/] of {escape(campaign)}")
    for record in built.iterations:
        console.print(
            f"  {record.iteration}: {record.status}"
            + (f" ({escape(record.winner)})" if record.winner else ""),
            soft_wrap=True,
        )
    for step in built.next_steps:
        console.print(f"[bold]Next:[/] {escape(step)}", soft_wrap=True)
    console.print(f"[bold]Report:[/] {path}")
    if log:
        console.print(f"[bold]Report run:[/] {log_report(built, path)}")


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
    force: bool = False,
    lock_timeout: float = 600.0,
) -> IterationOutcome:
    _quiet_mlflow()
    return run_iteration(
        spec_path,
        events,
        assignment,
        out,
        tracking_uri,
        next_spec_dir,
        force=force,
        lock_timeout=lock_timeout,
        progress=_progress,
    )


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


def _print_outcome(outcome: IterationOutcome) -> None:
    results = outcome.results
    d = results.decision
    console.print(results.comparisons_table([d.primary_metric], show_probability=False))
    if d.guardrails:
        console.print(_guardrail_table(d.guardrails))
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
    console.print(table)
    if outcome.reused:
        console.print(
            "[bold]Already analysed:[/] this spec and data were logged before; nothing was "
            "redone and the next spec was left as it is (--force analyses again).",
            soft_wrap=True,
        )
    lines: list[tuple[str, object]] = [
        ("Next spec", outcome.next_spec_path or f"not written: {outcome.next_spec_note}"),
        ("MLflow run", outcome.run_id),
        ("HTML report", outcome.report_path),
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
    lines.append(("Open the UI", ui_hint(outcome.tracking_uri, outcome.experiment_id)))
    for label, value in lines:
        console.print(f"[bold]{label}:[/] {escape(str(value))}", soft_wrap=True)
