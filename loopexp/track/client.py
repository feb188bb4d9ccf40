"""How loopexp talks to an MLflow store: the client for a URI, and a clear error when it is away.

Split from :mod:`loopexp.track.tracking` (issue 25) so that module stays one concern: what a run
holds. MLflow is imported inside :func:`mlflow_client`, never at import time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from loopexp.core import config
from loopexp.track.locks import file_lock, short_hash
from loopexp.track.store import (
    RetryingClient,
    StoreKind,
    TrackingUnavailableError,
    database_unavailable,
    known_kind,
)
from loopexp.track.views import is_remote

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# mlflow takes ~2 s to import: it is loaded only when a run is logged, so `import loopexp` is quick.

#: MLflow's HTTP client retries 7 times with backoff factor 2 and a 120 s timeout by default: a
#: stopped server stalls a run for minutes. loopexp's defaults (used unless the variable is set)
#: give up after about 10 s; set the MLflow variables to change them.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # Ending a run on a server, MLflow fetches it again to print "View run … at: <url>" (a
    # request per run, and a link without the runs-table view); loopexp prints its own link.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def configure_http() -> None:
    """Bound MLflow's HTTP retries (see :data:`HTTP_DEFAULTS`) unless the user set them."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def mlflow_client(uri: str) -> MlflowClient:
    """MLflow's client of the store at ``uri`` (bounded retries; a database's retried calls)."""
    configure_http()
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 (lazy, see above)

    if known_kind(uri) is StoreKind.DATABASE:  # PostgreSQL restarting: bounded retries
        return RetryingClient(MlflowClient(tracking_uri=uri))
    if not uri.startswith("sqlite:"):
        return MlflowClient(tracking_uri=uri)
    # MLflow creates a fresh SQLite store's tables without a lock (the client creates its store
    # when constructed): two first runs at once fail with "table latest_metrics already exists".
    # Constructing the client under a lock per database file makes the first contact safe; later
    # contacts find the tables (and MLflow caches the store per process).
    with file_lock(f"store-{short_hash(uri)}", timeout=300):
        return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def reachable(uri: str) -> Iterator[None]:
    """Turn a connection failure to a tracking server into :class:`TrackingUnavailableError`."""
    try:
        yield
    except TrackingUnavailableError:
        raise
    except Exception as exc:
        text = str(exc)
        if (
            is_remote(uri)
            and (
                "API request to" in text
                or "Max retries exceeded" in text
                or "Connection" in type(exc).__name__
                or "Connection refused" in text
            )
        ) or (known_kind(uri) is StoreKind.DATABASE and database_unavailable(exc)):
            raise TrackingUnavailableError(uri, exc) from exc
        raise


def artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local SQLite store (MLflow would use the working folder)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    if known_kind(uri) is StoreKind.DATABASE:  # shared by hosts, not ./mlruns of one of them
        return config.artifact_root()
    return None
