"""Where runs are kept: the kind of MLflow store a tracking URI names, and a pre-flight check of it.

Three kinds, told apart by the URI's scheme rather than "http or not":

- ``file``: one person's local store (``sqlite:///mlflow.db``, MLflow's default; ``file:`` folders);
- ``database``: a shared SQL database used directly (``postgresql+psycopg://…``, ``mysql://…``);
- ``server``: a tracking server (``http(s)://…``), e.g. the team's on PostgreSQL with S3 artifacts.

:func:`preflight` runs before a run starts any work and names the problem with the one command that
fixes it: a server that does not answer, credentials it refuses, a database schema older than the
installed MLflow (``mlflow db upgrade …``). MLflow's own errors for these come late (after the
analysis), buried in a traceback, or after minutes of retries.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse, urlunparse

from loopexp.core.errors import ConfigError, StateError

#: SQLAlchemy dialects MLflow's tracking store supports, each with its optional ``+driver``.
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
SERVER_SCHEMES = ("http", "https")
#: Seconds a pre-flight waits for an answer: it must fail fast, before the run's work starts.
PREFLIGHT_TIMEOUT = 10.0
#: Tries of a call to a database store before its error is raised (waits 1+2+4+8 s between).
DB_RETRY_ATTEMPTS = 5


class StoreKind(StrEnum):
    """The three kinds of MLflow store loopexp runs against."""

    FILE = "file"
    DATABASE = "database"
    SERVER = "server"


class StoreNotReadyError(StateError):
    """The tracking store cannot take a run now; the message says why and the command to fix it."""


class StoreUnreachableError(StoreNotReadyError):
    """The server or database does not answer (a run analyses anyway and keeps it locally)."""


class StoreConfigError(ConfigError):
    """The tracking URI is not one loopexp can use (unknown scheme, missing driver)."""


class TrackingUnavailableError(StateError):
    """The tracking server could not be reached (after bounded retries)."""

    def __init__(self, uri: str, cause: BaseException | str):
        self.uri = uri
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        what = "database" if known_kind(uri) is StoreKind.DATABASE else "tracking server"
        super().__init__(f"MLflow {what} {redact(uri)} is not reachable ({first_line[:300]})")


def store_kind(uri: str) -> StoreKind:
    """The kind of store ``uri`` names (``sqlite:``, ``file:`` or a path: a local file store)."""
    scheme = urlparse(uri).scheme.lower()
    if scheme in SERVER_SCHEMES:
        return StoreKind.SERVER
    if scheme.split("+", 1)[0] in DATABASE_SCHEMES:
        return StoreKind.DATABASE
    if scheme in ("sqlite", "file", "") or len(scheme) == 1:  # "C:\…" parses as scheme "c"
        return StoreKind.FILE
    raise StoreConfigError(
        f"tracking URI {redact(uri)!r}: unknown scheme {scheme!r}; use sqlite:///mlflow.db, "
        "postgresql+psycopg://user:password@host/db or http(s)://server:port"
    )


def known_kind(uri: str) -> StoreKind | None:
    """The store's kind, or None for a scheme loopexp does not know (MLflow may: databricks)."""
    try:
        return store_kind(uri)
    except StoreConfigError:
        return None


def is_postgresql(uri: str) -> bool:
    """True for a ``postgresql://`` or ``postgresql+driver://`` URI."""
    return urlparse(uri).scheme.lower().split("+", 1)[0] == "postgresql"


def redact(uri: str) -> str:
    """The URI without its password (for messages and logs)."""
    parts = urlparse(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunparse(parts._replace(netloc=netloc))


def psycopg_dsn(uri: str) -> str:
    """A ``postgresql+psycopg://`` (SQLAlchemy) URI as the ``postgresql://`` DSN psycopg takes."""
    parts = urlparse(uri)
    return urlunparse(parts._replace(scheme="postgresql"))


@dataclass(frozen=True)
class Preflight:
    """What the pre-flight found: the store's kind and, for a server, the signed-in user."""

    kind: StoreKind
    user: str | None = None


def preflight(uri: str) -> Preflight:
    """Check that the store at ``uri`` can take a run; raise :class:`StoreNotReadyError` if not."""
    kind = store_kind(uri)
    if kind is StoreKind.SERVER:
        return Preflight(kind, _check_server(uri))
    if kind is StoreKind.DATABASE:
        _check_database(uri)
    return Preflight(kind)


def _credentials() -> tuple[str, str] | None:
    """MLflow's own sign-in variables (MLflow reads the same two for every request)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    return (user, password) if user else None


def _get(url: str, auth: tuple[str, str] | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=PREFLIGHT_TIMEOUT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _check_server(uri: str) -> str | None:
    base = uri.rstrip("/")
    try:
        status, _ = _get(f"{base}/health", None)
    except OSError as exc:
        raise StoreUnreachableError(
            f"MLflow tracking server {redact(uri)} is not reachable ({exc}). Start it (on the "
            "server: `loopexp server start --config-dir …` or `systemctl start loopexp-mlflow`), "
            "or check --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None
    if status != 200:
        raise StoreNotReadyError(f"MLflow tracking server {redact(uri)}: /health answered {status}")
    auth = _credentials()
    status, body = _get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", auth)
    if status == 401:
        who = f"user {auth[0]!r}" if auth else "no credentials"
        raise StoreNotReadyError(
            f"MLflow tracking server {redact(uri)} refused the sign-in ({who}). Set your "
            "account: export MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password> "
            "(ask the server's admin; `loopexp server init` wrote them to team.json)"
        )
    if status != 200:
        raise StoreNotReadyError(
            f"MLflow tracking server {redact(uri)} answered {status} to a search: "
            f"{body[:200].decode(errors='replace')}"
        )
    return auth[0] if auth else None


def _check_database(uri: str) -> None:
    """Connect, and compare the schema's Alembic revision with the installed MLflow's."""
    try:
        import sqlalchemy  # noqa: PLC0415 (comes with MLflow; loaded only for a database store)
        from mlflow.store.db.utils import (  # noqa: PLC0415
            _get_latest_schema_revision,
            _get_schema_version,
        )
    except ImportError as exc:
        raise StoreConfigError(
            f"{redact(uri)}: {exc}; install the team extra: pip install 'loopexp[team]'"
        ) from None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=_connect_args(uri))
    except (ImportError, sqlalchemy.exc.ArgumentError) as exc:
        raise StoreConfigError(
            f"{redact(uri)}: {exc}; for PostgreSQL use postgresql+psycopg://… and install the "
            "team extra: pip install 'loopexp[team]'"
        ) from None
    try:
        with engine.connect() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
        current = _get_schema_version(engine) if "alembic_version" in tables else None
    except sqlalchemy.exc.OperationalError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        raise StoreUnreachableError(
            f"database {redact(uri)} is not reachable ({first}); check that it runs and "
            "accepts this user (e.g. `pg_isready -h <host> -p <port>`)"
        ) from None
    finally:
        engine.dispose()
    if current is None:
        return  # an empty database: MLflow creates its tables on first use
    head = _get_latest_schema_revision()
    if current != head:
        raise StoreNotReadyError(
            f"database {redact(uri)} has MLflow schema {current}, older than the installed "
            f"MLflow's {head}. Take a backup, then run:\n  mlflow db upgrade '{redact(uri)}'"
        )


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not be reached (worth a retry, then an error)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        if type(seen).__name__ in ("OperationalError", "InterfaceError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RetryingClient:
    """An ``MlflowClient`` on a database store whose calls retry while the database is away.

    MLflow's HTTP client retries a busy server, but its SQL store raises at once when PostgreSQL
    restarts (a failover, an upgrade). Each call is tried ``attempts`` times, waiting 1, 2, 4 …
    seconds (about 15 s in all by default); then the error is raised and becomes the run's clear
    "not reachable" error. MLflow's pool checks connections before use (``pool_pre_ping``), so a
    retry after a restart gets a fresh connection.
    """

    def __init__(self, client: Any, attempts: int = DB_RETRY_ATTEMPTS, wait: float = 1.0):
        self._client = client
        self._attempts = attempts
        self._wait = wait

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(self._attempts):
                try:
                    return attr(*args, **kwargs)
                except Exception as exc:
                    if attempt + 1 >= self._attempts or not database_unavailable(exc):
                        raise
                    time.sleep(self._wait * 2**attempt)
            raise AssertionError("unreachable")  # the loop returns or raises

        return call


def _connect_args(uri: str) -> dict[str, object]:
    return {"connect_timeout": int(PREFLIGHT_TIMEOUT)} if is_postgresql(uri) else {}


__all__ = [
    "Preflight",
    "RetryingClient",
    "StoreConfigError",
    "StoreKind",
    "StoreNotReadyError",
    "StoreUnreachableError",
    "TrackingUnavailableError",
    "database_unavailable",
    "is_postgresql",
    "known_kind",
    "preflight",
    "psycopg_dsn",
    "redact",
    "store_kind",
]
