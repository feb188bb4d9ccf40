"""``loopexp assign``: recipients in, variants out by salted hash, every row accounted for."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from loopexp.cli.common import console, load
from loopexp.cli.errors import err_console

if TYPE_CHECKING:
    from loopexp.assignment.assign import AssignmentSummary
    from loopexp.core.keys import HashKey
    from loopexp.design.spec import ExperimentSpec


def assign(
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
    from loopexp.assignment.assign import assign_recipients  # noqa: PLC0415 (fast --help)
    from loopexp.assignment.recipients import read_recipients, read_table  # noqa: PLC0415
    from loopexp.core.parallel import available_workers  # noqa: PLC0415 (fast --help)

    spec = load(spec_path)
    if spec.flow is not None:  # a flow test: entries into its split, not a list (issue 26)
        _assign_flow(spec, recipients, out, json_out)
        return
    # A RecipientsError, HashKeyError or an --as-of that is not a date exits 2 (errors.py).
    key = _hash_key(key_file, demo_key)
    started = time.perf_counter()
    table = read_recipients(recipients)
    read_seconds = time.perf_counter() - started
    for warning in unfilled_placeholders(spec, list(table.columns), recipients.name):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    past = read_table(history, "contact history") if history else None
    reference = datetime.fromisoformat(as_of) if as_of else None
    result = assign_recipients(table, spec, key, past, reference, source=str(recipients))
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


def _assign_flow(spec: ExperimentSpec, entries: Path, out: Path, json_out: bool) -> None:
    """Entries (recipient_key, entered_at, segment) into the flow's experiment split."""
    import json  # noqa: PLC0415

    from loopexp.assignment.flow import assign_flow_entries  # noqa: PLC0415 (fast --help)
    from loopexp.assignment.recipients import read_table  # noqa: PLC0415

    frame = read_table(entries, "flow entries")
    result = assign_flow_entries(frame.astype(object), spec)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "assignment": out / "assignment.parquet",
        "entries": out / "entries.parquet",
    }
    result.assignment.to_parquet(paths["assignment"], index=False)
    result.entries.to_parquet(paths["entries"], index=False)
    summary = {
        "source": str(entries),
        "input_rows": len(frame),
        "recipients": len(result.assignment),
        "entries": len(result.entries),
        "excluded": result.excluded,
        "arms": result.assignment["variant_id"].value_counts().to_dict(),
        "flow_version": spec.flow.version() if spec.flow else None,
    }
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"Flow entries of {entries}", box=box.ROUNDED)
    table.add_column("rows", style="bold")
    table.add_column("count", justify="right")
    for name in ("input_rows", "entries", "recipients"):
        table.add_row(name.replace("_", " "), f"{summary[name]:,}")
    for reason, count in result.excluded.items():
        table.add_row(f"not counted: {reason}", f"{count:,}")
    for arm, count in summary["arms"].items():
        table.add_row(f"arm {arm}", f"{count:,}")
    console.print(table)
    for name, path in paths.items():
        console.print(f"[bold]{name}:[/] {path}", soft_wrap=True, highlight=False, emoji=False)


#: The variant fields a mail is written from: a ``{column}`` in them is filled per recipient.
_TEXT_FIELDS = ("subject", "preheader", "from_name", "content")


def unfilled_placeholders(spec: ExperimentSpec, columns: list[str], source: str) -> list[str]:
    """A warning per ``{placeholder}`` in a variant's texts that no column of the list fills.

    Personalising from a column the list lacks would send "Hi {first_name}" or an empty name,
    unless the ESP fills it from its own profiles: a warning (on stderr), not an error.
    """
    import string  # noqa: PLC0415

    have = set(columns)
    warnings = []
    for v in spec.variants:
        for field in _TEXT_FIELDS:
            text = getattr(v, field, None) or ""
            try:
                names = {n for _, n, _, _ in string.Formatter().parse(text) if n}
            except ValueError:  # a lone brace: not a placeholder
                continue
            for name in sorted(names - have):
                warnings.append(
                    f"variant {v.id!r} {field} uses {{{name}}}, but {source} has no {name!r} "
                    "column: add it to the list, or make sure your ESP fills it"
                )
    return warnings


def _hash_key(key_file: Path | None, demo_key: bool) -> HashKey | None:
    """The e-mail hashing key, or None when none is set (needed only for lists of addresses)."""
    from loopexp.core.keys import HashKeyError, load_hash_key  # noqa: PLC0415 (fast --help)

    if key_file or demo_key:
        key = load_hash_key(key_file, allow_demo=demo_key)
        if key.is_demo:  # on stderr, so that --json output stays parseable
            err_console.print(
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
