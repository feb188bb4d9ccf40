"""What the command groups share: the consoles, options used by several commands, spec loading.

Only what typer needs to build the commands is imported here (option types, help texts), so that
``loopexp --help`` starts at once; each command imports its stage inside the function.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from loopexp.cli.errors import fail
from loopexp.events.adapters import registry

if TYPE_CHECKING:
    from loopexp.design.spec import ExperimentSpec

console = Console(highlight=False)

#: Every ``--format`` name ingest accepts, from the adapter registry (which loads no DuckDB).
FORMATS: tuple[str, ...] = registry.format_names()

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


def progress(message: str) -> None:
    """One timestamped progress line (the long commands report each step)."""
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}", soft_wrap=True)


def load(path: Path) -> ExperimentSpec:
    """The spec at ``path``; a spec error exits 2 with its file, line and field."""
    from loopexp.design.spec import load_spec  # noqa: PLC0415 (YAML and pydantic models on use)

    return load_spec(path)  # a SpecError is an InputError: the error table exits 2


def check_format(fmt: str) -> None:
    """Refuse an unknown ``--format`` before reading anything."""
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def quiet_mlflow() -> None:
    """MLflow's INFO lines (database migrations) are noise in a terminal summary."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
