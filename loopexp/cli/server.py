"""``loopexp ui``: the MLflow UI on 127.0.0.1, started and stopped with the command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from loopexp.cli.common import TrackingOpt, console
from loopexp.cli.errors import EXIT_FAILURE, error, fail


def ui(
    tracking_uri: TrackingOpt = None,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    campaign: Annotated[str | None, typer.Option(help="print the link to this campaign")] = None,
) -> None:
    """Start the MLflow UI (`mlflow server`, 1 worker, jobs off) on 127.0.0.1 and print the link."""
    from loopexp.track.store import redact  # noqa: PLC0415 (fast --help)

    # Light (no MLflow, no pandas): the server starts at once and loads MLflow in its own process.
    from loopexp.track.views import (  # noqa: PLC0415 (fast --help)
        experiment_url,
        is_remote,
        resolve_tracking_uri,
    )

    uri = resolve_tracking_uri(tracking_uri)
    if is_remote(uri):
        console.print(
            f"{uri} is a tracking server already: open {experiment_url(uri)}", soft_wrap=True
        )
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
    console.print(f"starting the MLflow UI on {url} against {redact(uri)} …", soft_wrap=True)
    # Its own process group: stopping `loopexp ui` (Ctrl-C, SIGTERM) stops the server's workers too.
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None:
                error(f"mlflow server exited with code {proc.returncode}", EXIT_FAILURE)
            if time.monotonic() > deadline:
                error(f"mlflow server did not answer on {url} within 120 s", EXIT_FAILURE)
            time.sleep(0.3)
        experiment_id = _experiment_id(url, campaign) if campaign else None
        # One line, never wrapped: a link cut in two does not open (and scripts read it).
        link = experiment_url(url, experiment_id)
        console.print(f"MLflow UI: {link}  (Ctrl-C stops it)", soft_wrap=True, highlight=False)
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


# --- the team's server: `loopexp server init` / `loopexp server start` ----------------------------

ConfigDirOpt = Annotated[
    Path, typer.Option(help="folder of team.json and basic_auth.ini (keep it private: 0700)")
]


def server_init(
    backend_store_uri: Annotated[
        str, typer.Option(help="postgresql+psycopg://user:password@host:5432/mlflow")
    ],
    artifacts_destination: Annotated[
        str, typer.Option(help="s3://bucket/prefix (the server proxies artifacts)")
    ],
    config_dir: ConfigDirOpt = Path("loopexp-team"),
    host: Annotated[str, typer.Option(help="address the server listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port the server listens on")] = 5000,
    workers: Annotated[int, typer.Option(help="server worker processes")] = 2,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="the URL the team opens, e.g. http://mlflow.internal:5000 (its host "
            "name is allowed; MLflow answers only localhost and private IPs otherwise)"
        ),
    ] = None,
) -> None:
    """Create the team store's schemas and write its config with fresh passwords (idempotent)."""
    from loopexp.track.store import StoreKind, redact, store_kind  # noqa: PLC0415
    from loopexp.track.team import (  # noqa: PLC0415
        TeamConfig,
        check_public_url,
        init_config,
        upgrade_schemas,
    )

    if store_kind(backend_store_uri) is not StoreKind.DATABASE:
        fail(
            f"--backend-store-uri {backend_store_uri!r} is not a database (postgresql+psycopg://…)"
        )
    team = TeamConfig(backend_store_uri, artifacts_destination, host, port, workers)
    team.public_url = check_public_url(public_url) if public_url else None
    config = init_config(config_dir, team)
    console.print(f"upgrading the MLflow and auth schemas in {redact(backend_store_uri)} …")
    upgrade_schemas(config)
    console.print(f"wrote {config_dir / 'team.json'} (0600); next: loopexp server start "
                  f"--config-dir {config_dir}")  # fmt: skip


def server_start(config_dir: ConfigDirOpt = Path("loopexp-team")) -> None:
    """Run the team's MLflow server (foreground, for systemd), create its users, print the URLs."""
    from loopexp.track.team import (  # noqa: PLC0415 (fast --help)
        load_config,
        provision_users,
        server_command,
        server_env,
        sign_in_lines,
    )

    config = load_config(config_dir)
    proc = subprocess.Popen(
        server_command(config), env=server_env(config_dir, config), start_new_session=True
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _wait_healthy(proc, config.url, timeout=180)
        provision_users(config)
        for line in sign_in_lines(config, config_dir):
            console.print(line, soft_wrap=True)
        sys.stdout.flush()
        proc.wait()
        if proc.returncode:
            error(f"mlflow server exited with code {proc.returncode}", EXIT_FAILURE)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(proc)


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if proc.poll() is not None:
            error(f"mlflow server exited with code {proc.returncode}", EXIT_FAILURE)
        if time.monotonic() > deadline:
            error(f"mlflow server did not answer on {url} within {timeout:g} s", EXIT_FAILURE)
        time.sleep(0.3)


def _experiment_id(url: str, campaign: str) -> str | None:
    """The campaign's experiment id, asked of the server just started (None when it has none).

    One GET of MLflow's REST API rather than the MLflow client: importing the client here would
    add seconds to ``loopexp ui`` while the server already has MLflow loaded.
    """
    query = urllib.parse.urlencode({"experiment_name": campaign})
    try:
        with urllib.request.urlopen(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10
        ) as resp:
            return json.load(resp)["experiment"]["experiment_id"]
    except (OSError, KeyError, ValueError):  # 404 (no such campaign yet) is an HTTPError
        return None


# --- the team's users: `loopexp server add-user` / `loopexp server users` ------------------------


class Role(StrEnum):
    """What a user may do on the team server."""

    analyst = "analyst"
    marketer = "marketer"


def server_add_user(
    name: Annotated[str, typer.Argument(help="the user's sign-in name")],
    role: Annotated[
        Role, typer.Option(help="analyst: writes runs (any campaign); marketer: reads them only")
    ],
    config_dir: ConfigDirOpt = Path("loopexp-team"),
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin's first line")
    ] = False,
    reset_password: Annotated[
        bool,
        typer.Option("--reset-password", help="an existing user: a new password and this role"),
    ] = False,
) -> None:
    """Add a user to the running team server (the admin's password is read from team.json)."""
    from loopexp.track.team import add_user, load_config, save_password  # noqa: PLC0415

    config = load_config(config_dir)
    given = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    password = add_user(config, name, role.value, given, reset_password)
    done = "new password for" if reset_password else "added"
    console.print(f"{done} {role.value} {name!r} on {config.team_url}", soft_wrap=True)
    if save_password(config_dir, config, name, password):
        console.print(f"  (its password in {config_dir / 'team.json'} is updated)", soft_wrap=True)
    if given is None:  # generated: shown this once, the server keeps only its hash
        console.print(f"  password (shown once, pass it on privately): {password}", soft_wrap=True)


def server_users(config_dir: ConfigDirOpt = Path("loopexp-team")) -> None:
    """List the team server's users and their role (no passwords)."""
    from rich.table import Table  # noqa: PLC0415

    from loopexp.track.team import list_users, load_config  # noqa: PLC0415

    config = load_config(config_dir)
    can = {"admin": "manages users", "analyst": "writes runs", "marketer": "reads runs"}
    table = Table("user", "role", "may", title=f"users of {config.team_url}")
    for user in list_users(config):
        table.add_row(user.name, user.role, can[user.role])
    console.print(table)
