"""A team's tracking server: MLflow on PostgreSQL, artifacts proxied to S3, basic-auth sign-in.

``loopexp server init`` writes a config folder (:func:`init_config`): ``team.json`` (0600: the
store URIs and the generated passwords and secret key) and ``basic_auth.ini`` (MLflow's auth app,
its user tables in the same PostgreSQL, everyone READ by default); it creates both schemas
(``mlflow db upgrade`` and the auth app's own migration). ``loopexp server start`` runs
:func:`server_command` and then :func:`provision_users`: the admin password comes from the config
(MLflow refuses ``password1234``), an ``analyst`` who writes (creators of an experiment get MANAGE
on it) and a ``marketer`` who only reads (the default permission).

The user calls are MLflow's auth REST API (``/api/2.0/mlflow/users/…``), made with ``requests``
(an MLflow dependency): MLflow's ``AuthServiceClient`` takes its credentials only from the
process environment, which a provisioning step for several users would have to rewrite.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loopexp.core.errors import ConfigError, StateError
from loopexp.track.store import redact

TEAM_FILE = "team.json"
AUTH_INI = "basic_auth.ini"
#: The roles a team needs: who writes runs (analysts, cron hosts) and who reads them (marketers).
ANALYST, MARKETER, ADMIN = "analyst", "marketer", "admin"
#: The default admin password older MLflow versions shipped; it must never stay usable.
LEGACY_ADMIN_PASSWORD = "password1234"
#: Seconds a worker trusts a verified sign-in (MLflow's ``auth_cache_ttl_seconds``; off by default).
AUTH_CACHE_TTL = 60


class TeamServerError(StateError):
    """The team server could not be set up (a step failed; the message names it)."""


@dataclass
class TeamConfig:
    """What ``team.json`` holds: where the store is and the accounts' secrets."""

    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    passwords: dict[str, str] = field(
        default_factory=lambda: {r: secrets.token_urlsafe(18) for r in (ADMIN, ANALYST, MARKETER)}
    )

    @property
    def url(self) -> str:
        """The server's base URL as the team reaches it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def load_config(folder: Path) -> TeamConfig:
    """The team config of ``folder`` (written by :func:`init_config`)."""
    path = Path(folder) / TEAM_FILE
    try:
        return TeamConfig(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ConfigError(
            f"{path} does not exist: run `loopexp server init --config-dir {folder} …` first"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a loopexp team config ({exc})") from None


def init_config(folder: Path, config: TeamConfig) -> TeamConfig:
    """Write ``team.json`` and ``basic_auth.ini`` into ``folder``; keep the secrets of a re-init."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TEAM_FILE
    if path.exists():  # re-running init must not change passwords the team already uses
        old = load_config(folder)
        config.secret_key, config.passwords = old.secret_key, old.passwords
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(config), handle, indent=2)
    (folder / AUTH_INI).write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {config.backend_store_uri}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # MLflow checks the password (PBKDF2) on every request unless this cache is on: one
        # iteration's logging (~40 requests) took 40x SQLite's time without it (bench/README.md).
        # A changed password reaches the other workers within the TTL.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL}\n",
        encoding="utf-8",
    )
    os.chmod(folder / AUTH_INI, 0o600)  # it holds the database password
    return config


def upgrade_schemas(config: TeamConfig) -> None:
    """``mlflow db upgrade`` and the auth app's migration (both idempotent)."""
    uri = config.backend_store_uri
    for args in (
        ["mlflow", "db", "upgrade", uri],
        ["mlflow.server.auth", "db", "upgrade", "--url", uri],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise TeamServerError(
                f"`{' '.join(args[:3])} {redact(uri)}` failed: {' | '.join(tail)}"
            )


def server_env(folder: Path, config: TeamConfig) -> dict[str, str]:
    """The environment of ``mlflow server``: the auth config, admin password and secret key."""
    return {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str((Path(folder) / AUTH_INI).resolve()),
        "MLFLOW_AUTH_ADMIN_PASSWORD": config.passwords[ADMIN],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": config.secret_key,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def server_command(config: TeamConfig) -> list[str]:
    """``mlflow server`` on PostgreSQL, artifacts proxied to the bucket, with basic-auth."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", config.backend_store_uri,
        "--artifacts-destination", config.artifacts_destination,
        "--serve-artifacts",
        "--app-name", "basic-auth",
        "--host", config.host,
        "--port", str(config.port),
        "--workers", str(config.workers),
    ]  # fmt: skip


def _call(config: TeamConfig, method: str, path: str, body: dict | None = None) -> int:
    import requests  # noqa: PLC0415 (an MLflow dependency, loaded by the server commands only)

    response = requests.request(
        method,
        f"{config.url}/api/2.0/mlflow/users/{path}",
        json=body if method != "GET" else None,
        params=body if method == "GET" else None,
        auth=(ADMIN, config.passwords[ADMIN]),
        timeout=30,
    )
    return response.status_code


def provision_users(config: TeamConfig) -> None:
    """Create the analyst and marketer (once) and check the legacy admin password is refused."""
    if _call(config, "GET", "get", {"username": ADMIN}) != 200:
        raise TeamServerError(
            f"{config.url} refused the admin's configured password: the admin was created with "
            "another one; set it with MLFLOW_AUTH_ADMIN_PASSWORD once (see recipes/team/README.md)"
        )
    for role in (ANALYST, MARKETER):
        if _call(config, "GET", "get", {"username": role}) == 200:
            continue
        status = _call(
            config, "POST", "create", {"username": role, "password": config.passwords[role]}
        )
        if status != 200:
            raise TeamServerError(f"creating the user {role!r} on {config.url} answered {status}")
    legacy = TeamConfig(**{**asdict(config), "passwords": {ADMIN: LEGACY_ADMIN_PASSWORD}})
    if _call(legacy, "GET", "get", {"username": ADMIN}) == 200:
        raise TeamServerError(f"{config.url} still accepts admin/{LEGACY_ADMIN_PASSWORD}")


def sign_in_lines(config: TeamConfig, folder: Path) -> list[str]:
    """What to tell the team: the URL each role opens and how the analysts sign in."""
    url = config.url
    return [
        f"MLflow (team) at {url}: users and passwords are in {Path(folder) / TEAM_FILE}",
        f"  marketer (read-only) opens  {url}/#/experiments?workflowType=machine_learning",
        f"  analyst / cron host:  export MLFLOW_TRACKING_URI={url} "
        f"MLFLOW_TRACKING_USERNAME={ANALYST} MLFLOW_TRACKING_PASSWORD=<from {TEAM_FILE}>",
        f"  admin (users, permissions):  {url}/signup  (user {ADMIN})",
    ]
