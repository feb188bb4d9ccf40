"""How an error leaves the ``loopexp`` command: one table from exception class to exit code.

Every command runs through :func:`guarded`. An exception is looked up by its class's MRO in
:data:`ERROR_TABLE`, so a new subclass of :class:`~loopexp.core.errors.InputError` exits 2 and a
new :class:`~loopexp.core.errors.StateError` exits 1 without touching this module; only a class
that needs its own code or message has its own row. Anything the table cannot place is a bug in
loopexp: one line saying so (exit 1), or the traceback with ``LOOPEXP_DEBUG=1``.

Rows for classes whose module is heavy (the run stage loads DuckDB and scipy) name the class by
its dotted path: it is matched only when that module is loaded, which it is whenever one of its
exceptions is raised. This keeps ``loopexp --help`` fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape

from loopexp.core import config
from loopexp.core.errors import InputError, StateError

#: Exit codes, for schedulers (documented in ``loopexp --help`` and the README).
EXIT_DECIDED = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2
EXIT_KEEP_TESTING = 3
EXIT_INVALID = 4
EXIT_BUSY = 5
#: Ctrl-C (SIGINT): 128 + 2, what shells report for a process a SIGINT ended.
EXIT_INTERRUPTED = 130
INTERRUPTED = (
    "interrupted: stopped before finishing; an attempt or MLflow run in progress is marked failed"
)

EXIT_CODES_HELP = (
    "Exit codes of `run` and `upload`: 0 decided (ship, no difference or guardrail veto; the "
    "next spec is written), 3 keep testing, 4 invalid split (sample-ratio mismatch: fix the "
    "send), 1 failure (a notebook cell failed: MLflow run FAILED, no decision; or the tracking "
    "server is down: results kept locally for `loopexp upload`), 2 bad input (spec, files, "
    "columns, another iteration's assignment; nothing was run), 5 another run of the experiment "
    "holds its lock, 130 interrupted (Ctrl-C)."
)

#: Exceptions a notebook cell may raise that mean bad input, not a failed analysis (by name: the
#: kernel reports only the class's name).
NOTEBOOK_INPUT_ERRORS = ("EventsError", "QuarantineError", "SpecError")

err_console = Console(stderr=True, highlight=False)


def error(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=code)


def fail(message: str) -> NoReturn:
    """Refuse the user's input: print the message and exit 2."""
    error(message, EXIT_INPUT)


def _redacted(exc: BaseException) -> str:
    from loopexp.core.keys import redact_addresses  # noqa: PLC0415 (loads numpy: only on error)

    return redact_addresses(str(exc))


@dataclass(frozen=True)
class Rule:
    """What the command does with an exception: its exit code and its one-line message."""

    code: int
    message: Callable[[Any], str] = _redacted
    refine: Callable[[Any], Rule | None] | None = None
    """Optional: a more specific rule for this instance (e.g. by what a notebook raised)."""


def _tracking_message(exc: BaseException) -> str:
    return f"{_redacted(exc)}. Check the server (or --tracking-uri) and run again."


def _missing_file_message(exc: FileNotFoundError) -> str:
    """A missing file, with the closest name in its folder ("did you mean …?")."""
    import difflib  # noqa: PLC0415 (only on error)
    from pathlib import Path  # noqa: PLC0415

    message = _redacted(exc)
    if not exc.filename:
        return message
    wanted = Path(str(exc.filename))
    folder = wanted.parent if wanted.parent.is_dir() else None
    names = [p.name for p in folder.iterdir()] if folder else []
    close = difflib.get_close_matches(wanted.name, names, n=1)
    return message + (f"; did you mean {str(folder / close[0])!r}?" if folder and close else "")


def _notebook_input_message(exc: Any) -> str:
    from loopexp.core.keys import redact_addresses  # noqa: PLC0415 (loads numpy: only on error)

    return (
        f"{redact_addresses(exc.evalue.strip())}\n(the partly executed notebook is {exc.notebook}"
        + (f"; MLflow run {exc.run_id} is marked FAILED" if exc.run_id else "")
        + ")"
    )


def _notebook_message(exc: Any) -> str:
    from loopexp.core.keys import redact_addresses  # noqa: PLC0415 (loads numpy: only on error)

    return (
        f"the analysis notebook failed in cell {exc.cell}: {exc.ename}: "
        f"{redact_addresses(exc.evalue.strip()[:500])}\nThe partly executed notebook is "
        f"{exc.notebook}; open it to see the traceback."
        + (f" MLflow run {exc.run_id} is marked FAILED." if exc.run_id else "")
        + " No decision was written."
    )


NOTEBOOK_BAD_INPUT = Rule(EXIT_INPUT, _notebook_input_message)
"""A notebook that stopped on bad input (:data:`NOTEBOOK_INPUT_ERRORS`): exit 2, not a failure."""


def _notebook_refine(exc: Any) -> Rule | None:
    return NOTEBOOK_BAD_INPUT if exc.ename in NOTEBOOK_INPUT_ERRORS else None


#: Exception class (or the dotted path of one whose module is heavy) → what the command does.
#: Looked up along the exception's MRO: the most specific row wins.
ERROR_TABLE: dict[type[BaseException] | str, Rule] = {
    InputError: Rule(EXIT_INPUT),  # SpecError, EventsError, ConfigError, IngestError, ...
    StateError: Rule(EXIT_FAILURE),  # NotLoggedError, a dataset that fails its checksum, ...
    "loopexp.run.lock.ExperimentBusyError": Rule(EXIT_BUSY),
    "loopexp.track.tracking.TrackingUnavailableError": Rule(EXIT_FAILURE, _tracking_message),
    "loopexp.run.notebook.NotebookFailedError": Rule(
        EXIT_FAILURE, _notebook_message, _notebook_refine
    ),
    # Bad input that is not loopexp's own: a missing file, a bad number, an unparseable table.
    FileNotFoundError: Rule(EXIT_INPUT, _missing_file_message),
    OSError: Rule(EXIT_INPUT),  # FileNotFoundError, IsADirectoryError, PermissionError, ...
    ValueError: Rule(EXIT_INPUT),  # pandas/pyarrow parse errors derive from it
    "duckdb.Error": Rule(EXIT_INPUT),
}


def _loaded_rows() -> Iterator[tuple[type[BaseException], Rule]]:
    """The table's rows whose class exists in this process (a dotted path: its module loaded)."""
    for key, rule in ERROR_TABLE.items():
        if isinstance(key, str):
            module, _, name = key.rpartition(".")
            loaded = sys.modules.get(module)
            if loaded is None:
                continue  # nothing of that module can have been raised
            key = getattr(loaded, name)  # noqa: PLW2901 (the class the path names)
        yield key, rule


def rule_for(exc_type: type[BaseException]) -> Rule | None:
    """The table's row for an exception class: its own, else its nearest ancestor's (MRO)."""
    rows = dict(_loaded_rows())
    return next((rows[cls] for cls in exc_type.__mro__ if cls in rows), None)


def handle(exc: Exception) -> NoReturn:
    """Exit with the code and message the table gives ``exc``; an unplaced one is a bug."""
    rule = rule_for(type(exc))
    if rule is not None:
        rule = (rule.refine(exc) if rule.refine else None) or rule
        error(rule.message(exc), rule.code)
    if config.debug():
        raise exc
    error(
        f"unexpected {type(exc).__name__}: {exc} (this is a bug in loopexp: run again "
        "with LOOPEXP_DEBUG=1 for the traceback, and report it)",
        EXIT_FAILURE,
    )


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; turn an error into a clear message and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # one line, not a traceback of whatever was running
            err_console.print(INTERRUPTED, soft_wrap=True)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Exception as exc:  # the table decides: a clear line, or "a bug in loopexp"
            handle(exc)

    return wrapper
