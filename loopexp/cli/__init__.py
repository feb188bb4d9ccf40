"""The ``loopexp`` command: a thin shell over the Python API, for people and for schedulers.

One module per command group (``design``, ``assignment``, ``events``, ``run``, ``demo``,
``report``, ``server``); what they share is in ``common``, how errors become exit codes in
``errors``. This module builds the app and lists the commands in the order ``--help`` shows them.
Each command imports its stage inside the function, so ``loopexp --help`` loads no DuckDB, scipy,
statsmodels, MLflow, papermill or matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from loopexp.cli import assignment, demo, design, events, report, run, server
from loopexp.cli import collect as collect_cmd
from loopexp.cli import notebooks as notebook_commands
from loopexp.cli import policy as policy_cmd
from loopexp.cli.common import FormatsHelp
from loopexp.cli.errors import EXIT_CODES_HELP, guarded


class _App(typer.Typer):
    """A Typer app whose every command goes through :func:`loopexp.cli.errors.guarded`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        register = super().command(*args, **kwargs)

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            register(guarded(func))
            return func

        return decorator


app = _App(
    help="Closed-loop email experimentation: define, assign, measure, analyse, decide, iterate.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

#: The commands, in the order of ``loopexp --help``: the loop's, from a spec to its report.
COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("validate", design.validate),
    ("init", design.init),
    ("plan", design.plan),
    ("assign", assignment.assign),
    ("simulate", demo.simulate),
    ("run", run.run),
    ("upload", run.upload),
    ("runs", run.runs),
    ("ui", server.ui),
    ("ingest", events.ingest),
    ("collect", collect_cmd.collect),
    ("metrics", events.metrics),
    ("demo", demo.demo),
    ("report", report.report),
    ("policy", policy_cmd.policy),
    # The shipped notebooks for a wheel install (issue #30).
    ("notebooks", notebook_commands.notebooks),
    ("lab", notebook_commands.lab),
)

#: Commands whose help lists the ``--format`` names: looked up only when that help is shown.
_FORMATS_HELP = frozenset({"run", "ingest"})

for _name, _command in COMMANDS:
    app.command(_name, cls=FormatsHelp if _name in _FORMATS_HELP else None)(_command)

# `loopexp server init|start`: the team's tracking server (MLflow on PostgreSQL, S3, sign-in).
server_app = _App(help="The team's MLflow server: PostgreSQL, S3 artifacts, sign-in.")
server_app.command("init")(server.server_init)
server_app.command("start")(server.server_start)
server_app.command("add-user")(server.server_add_user)
server_app.command("users")(server.server_users)
app.add_typer(server_app, name="server")
