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
from typer.core import TyperCommand

from loopexp.cli.errors import fail

if TYPE_CHECKING:
    import click

    from loopexp.design.spec import ExperimentSpec

console = Console(highlight=False)

#: Stands in a help text for the ``--format`` names; :class:`FormatsHelp` fills it in.
FORMATS = "{formats}"


def format_names() -> tuple[str, ...]:
    """Every ``--format`` name ingest accepts, from the adapter registry.

    Asking the registry loads the adapters and pyarrow (~0.5 s): only when a format is checked or
    a help page that lists them is shown, never when ``loopexp`` starts.
    """
    from loopexp.events.adapters import registry  # noqa: PLC0415 (see above)

    return registry.format_names()


class FormatsHelp(TyperCommand):
    """A command whose help lists the ``--format`` names, looked up when the help is shown."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Fill in :data:`FORMATS` in the options' help, then show the help."""
        for param in self.params:
            help_text = getattr(param, "help", None)
            if help_text and FORMATS in help_text:
                param.help = help_text.replace(FORMATS, ", ".join(format_names()))  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


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
    names = format_names()
    if fmt not in names:
        fail(f"unknown format {fmt!r}; use one of {', '.join(names)}")


def quiet_mlflow() -> None:
    """MLflow's INFO lines (database migrations) are noise in a terminal summary."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
