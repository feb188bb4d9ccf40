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
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from loopexp.core.errors import ConfigError, InputError, StateError
from loopexp.track.store import redact

if TYPE_CHECKING:
    import requests

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


class TeamUserError(InputError):
    """A user cannot be added as asked (exists already, a reserved name, an empty password)."""


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
    #: The URL the team opens (``http://mlflow.internal:5000``): MLflow's server answers only
    #: requests naming localhost or a private IP unless told this name (DNS-rebinding protection).
    public_url: str | None = None

    @property
    def url(self) -> str:
        """The server's base URL as the team reaches it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def team_url(self) -> str:
        """The URL the team opens: ``public_url``, else :attr:`url`."""
        return (self.public_url or self.url).rstrip("/")


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
    """Write ``team.json`` and ``basic_auth.ini`` into ``folder``; a re-init keeps the secrets."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TEAM_FILE
    if path.exists():  # re-running init must not change passwords the team already uses
        old = load_config(folder)
        config.secret_key, config.passwords = old.secret_key, old.passwords
        config.public_url = config.public_url or old.public_url  # kept unless a new one is given
    _write_config(path, config)
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


def _write_config(path: Path, config: TeamConfig) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(config), handle, indent=2)


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
        *_public_options(config),
    ]  # fmt: skip


def check_public_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host name (what ``--public-url`` needs)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"--public-url {url!r}: give the URL the team opens, http(s)://host:port")
    return url


def _public_options(config: TeamConfig) -> list[str]:
    """``--allowed-hosts`` and ``--cors-allowed-origins`` naming the public URL's host.

    MLflow's defaults (localhost, private IPs) are kept: the admin calls go to 127.0.0.1. Without
    the host name every request through ``http://mlflow.internal:5000`` is refused, and without
    the origin so is the UI's runs search (a POST).
    """
    if not config.public_url:
        return []
    from mlflow.server.security_utils import get_default_allowed_hosts  # noqa: PLC0415 (heavy)

    public = urlparse(config.public_url)
    hosts = dict.fromkeys([*get_default_allowed_hosts(), public.hostname, public.netloc])
    origin = f"{public.scheme}://{public.netloc}"
    return ["--allowed-hosts", ",".join(h for h in hosts if h), "--cors-allowed-origins", origin]


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
    grant_role(config, ANALYST, ANALYST)  # writes in every campaign, not only its own
    legacy = TeamConfig(**{**asdict(config), "passwords": {ADMIN: LEGACY_ADMIN_PASSWORD}})
    if _call(legacy, "GET", "get", {"username": ADMIN}) == 200:
        raise TeamServerError(f"{config.url} still accepts admin/{LEGACY_ADMIN_PASSWORD}")


def sign_in_lines(config: TeamConfig, folder: Path) -> list[str]:
    """What to tell the team: the URL each role opens and how the analysts sign in."""
    url = config.team_url
    return [
        f"MLflow (team) at {url}: users and passwords are in {Path(folder) / TEAM_FILE}",
        f"  marketer (read-only) opens  {url}/#/experiments?workflowType=machine_learning",
        f"  analyst / cron host:  export MLFLOW_TRACKING_URI={url} "
        f"MLFLOW_TRACKING_USERNAME={ANALYST} MLFLOW_TRACKING_PASSWORD=<from {TEAM_FILE}>",
        f"  admin (users, permissions):  {url}/signup  (user {ADMIN})",
    ]


# --- the team's users: `loopexp server add-user` / `loopexp server users` -------------------------

#: The MLflow role that makes a user an analyst: EDIT on every experiment, so any analyst or cron
#: host writes the next iteration of a campaign another one started. A marketer has no role and
#: reads through the default permission (READ): a write is refused with 403.
ANALYST_ROLE = "loopexp-analyst"
#: MLflow's workspace when workspaces are off (roles belong to one).
WORKSPACE = "default"
ROLES = (ANALYST, MARKETER)


@dataclass(frozen=True)
class TeamUser:
    """A user of the team server and the loopexp role it has (``admin``, analyst or marketer)."""

    name: str
    role: str


def _api(
    config: TeamConfig, method: str, path: str, body: dict | None = None, version: int = 2
) -> requests.Response:
    """One admin call of MLflow's auth REST API (``/api/<version>.0/mlflow/<path>``)."""
    import requests  # noqa: PLC0415 (an MLflow dependency, loaded by the server commands only)

    try:
        return requests.request(
            method,
            f"{config.url}/api/{version}.0/mlflow/{path}",
            json=body if method != "GET" else None,
            params=body if method == "GET" else None,
            auth=(ADMIN, config.passwords[ADMIN]),
            timeout=30,
        )
    except requests.RequestException as exc:
        raise TeamServerError(
            f"the team server at {config.url} does not answer ({type(exc).__name__}): start it "
            "with `loopexp server start --config-dir …` on this host"
        ) from None


def _ok(response: requests.Response, what: str) -> dict:
    """The JSON of a 200 answer, else a :class:`TeamServerError` naming ``what`` failed."""
    status = response.status_code
    if status == 401:
        raise TeamServerError(
            f"{what}: the server refused the admin password of team.json (401); it was changed "
            "elsewhere: put the current one in team.json"
        )
    if status != 200:
        raise TeamServerError(f"{what} answered {status}: {response.text[:300]}")
    return response.json()


def _analyst_role_id(config: TeamConfig) -> int:
    """The id of :data:`ANALYST_ROLE`, created (EDIT on all experiments) the first time."""
    found = _ok(
        _api(config, "GET", "roles/list", {"workspace": WORKSPACE}, version=3), "listing roles"
    )
    for role in found.get("roles", []):
        if role["name"] == ANALYST_ROLE:
            return int(role["id"])
    body = {"name": ANALYST_ROLE, "workspace": WORKSPACE, "description": "loopexp: writes runs"}
    role_id = int(
        _ok(_api(config, "POST", "roles/create", body, 3), "creating a role")["role"]["id"]
    )
    grant = {
        "role_id": role_id,
        "resource_type": "experiment",
        "resource_pattern": "*",
        "permission": "EDIT",
    }
    _ok(_api(config, "POST", "roles/permissions/add", grant, 3), "granting the analyst role")
    return role_id


def _role_names(config: TeamConfig, name: str) -> set[str]:
    found = _ok(_api(config, "GET", "users/roles/list", {"username": name}, 3), "listing roles")
    return {role["name"] for role in found.get("roles", [])}


def grant_role(config: TeamConfig, name: str, role: str) -> None:
    """Give user ``name`` the loopexp ``role``: analyst (writes) or marketer (reads only)."""
    has = ANALYST_ROLE in _role_names(config, name)
    if (role == ANALYST) == has:
        return
    body = {"username": name, "role_id": _analyst_role_id(config)}
    if role == ANALYST:
        _ok(_api(config, "POST", "roles/assign", body, 3), f"making {name!r} an analyst")
    else:
        _ok(_api(config, "DELETE", "roles/unassign", body, 3), f"making {name!r} a marketer")


def add_user(
    config: TeamConfig, name: str, role: str, password: str | None = None, reset: bool = False
) -> str:
    """Create user ``name`` with ``role``; return its password (``password`` or a generated one).

    An existing user is refused unless ``reset``: then it gets the new password and that role.
    """
    if role not in ROLES:
        raise TeamUserError(f"--role {role!r}: use {' or '.join(ROLES)}")
    if not name.strip() or name == ADMIN:
        raise TeamUserError(f"user name {name!r} is reserved or empty: pick another")
    if password is not None and not password:
        raise TeamUserError("the password read from stdin is empty")
    password = password or secrets.token_urlsafe(18)
    exists = _api(config, "GET", "users/get", {"username": name}).status_code == 200
    body = {"username": name, "password": password}
    if exists and not reset:
        raise TeamUserError(
            f"user {name!r} already exists on {config.team_url}: keep it, pick another name, or "
            f"give it a new password: `loopexp server add-user {name} --role {role} "
            "--reset-password`"
        )
    if exists:
        _ok(_api(config, "PATCH", "users/update-password", body), f"new password for {name!r}")
    else:
        _ok(_api(config, "POST", "users/create", body), f"creating the user {name!r}")
    grant_role(config, name, role)
    return password


def save_password(folder: Path, config: TeamConfig, name: str, password: str) -> bool:
    """Keep ``team.json`` right when a user it lists (analyst, marketer) got a new password."""
    if name not in config.passwords:
        return False
    config.passwords[name] = password
    _write_config(Path(folder) / TEAM_FILE, config)
    return True


def list_users(config: TeamConfig) -> list[TeamUser]:
    """Every user of the team server with its loopexp role (no passwords: the server has hashes)."""
    found = _ok(_api(config, "GET", "users/list"), "listing users")
    users = []
    for user in found.get("users", []):
        names = {role["name"] for role in user.get("roles", [])}
        role = ADMIN if user.get("is_admin") else ANALYST if ANALYST_ROLE in names else MARKETER
        users.append(TeamUser(user["username"], role))
    return sorted(users, key=lambda u: u.name)
