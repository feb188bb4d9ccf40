"""One run of an experiment at a time, on one host or across hosts.

- A local store (SQLite): a lock file per experiment (``flock``, freed even on kill -9).
- A PostgreSQL store, or a tracking server whose lock database is named (``LOOPEXP_LOCK_URI``):
  a PostgreSQL session advisory lock, so two cron hosts sharing the store get one run. PostgreSQL
  frees it when the holding connection ends, which the kernel does when the process dies (even
  by kill -9), so it never goes stale either.
- A tracking server without ``LOOPEXP_LOCK_URI``: the lock file (one host); a team with several
  hosts sets the variable to the server's database (see README, "For a team").
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator

from loopexp.core import config
from loopexp.core.errors import ConfigError, StateError
from loopexp.design.spec import ExperimentSpec
from loopexp.track.store import is_postgresql, psycopg_dsn, redact
from loopexp.track.tracking import file_lock, short_hash

#: Seconds between two tries of a busy advisory lock.
POLL_SECONDS = 0.5


class ExperimentBusyError(StateError):
    """Another process holds the experiment's lock."""


def experiment_lock_name(spec: ExperimentSpec, tracking_uri: str) -> str:
    """The lock file's name of an experiment (campaign and name) in one tracking store."""
    return f"experiment-{short_hash(tracking_uri, spec.campaign, spec.name)}"


def advisory_key(spec: ExperimentSpec) -> int:
    """The experiment's advisory lock key: a signed 64-bit hash of campaign and name."""
    digest = hashlib.sha256(f"loopexp\0{spec.campaign}\0{spec.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_database(tracking_uri: str) -> str | None:
    """The PostgreSQL holding the lock: ``LOOPEXP_LOCK_URI``, else a PostgreSQL store's own."""
    named = config.lock_uri()
    if named is not None:
        if not is_postgresql(named):
            raise ConfigError(
                f"LOOPEXP_LOCK_URI={redact(named)!r} is not a PostgreSQL URI; use "
                "postgresql+psycopg://user:password@host:5432/db (the tracking store's database)"
            )
        return named
    return tracking_uri if is_postgresql(tracking_uri) else None


@contextlib.contextmanager
def advisory_lock(database: str, key: int, timeout: float) -> Iterator[None]:
    """Hold the advisory lock ``key`` in ``database``; :class:`TimeoutError` after ``timeout`` s."""
    try:
        import psycopg  # noqa: PLC0415 (the team extra; only a PostgreSQL store needs it)
    except ImportError:
        raise ConfigError(
            "the PostgreSQL lock needs psycopg: pip install 'loopexp[team]'"
        ) from None
    try:
        conn = psycopg.connect(psycopg_dsn(database), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StateError(
            f"cannot take the run lock in {redact(database)} ({first}); check that PostgreSQL "
            "runs and that LOOPEXP_LOCK_URI (or --tracking-uri) names it"
        ) from None
    with conn:
        deadline = time.monotonic() + timeout
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"advisory lock {key} in {redact(database)}")
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # a lost connection has freed it already
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextlib.contextmanager
def experiment_lock(spec: ExperimentSpec, tracking_uri: str, timeout: float) -> Iterator[None]:
    """Hold the experiment's lock; raise :class:`ExperimentBusyError` after ``timeout`` s."""
    database = lock_database(tracking_uri)
    if database is not None:
        held = advisory_lock(database, advisory_key(spec), timeout)
    else:
        held = file_lock(experiment_lock_name(spec, tracking_uri), timeout=timeout)
    try:
        with held:
            yield
    except TimeoutError as exc:
        raise ExperimentBusyError(
            f"another loopexp run of {spec.campaign}/{spec.name} holds the lock {exc} "
            f"(waited {timeout:g} s); it ends when that run ends"
        ) from None


__all__ = [
    "ExperimentBusyError",
    "advisory_key",
    "advisory_lock",
    "experiment_lock",
    "experiment_lock_name",
    "lock_database",
]
