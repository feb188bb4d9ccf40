"""Reading runs from a tracking server through MLflow's REST API, without importing MLflow.

``loopexp runs`` and the closed-loop report only search runs. Importing MLflow's client costs
2–3 s of CPU (more than the search itself: :file:`bench/README.md`), so on a server they call the
two documented endpoints (``experiments/get-by-name``, ``runs/search``) with the standard library.
Sign-in is MLflow's own variables (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` or ``_TOKEN``);
when the client is set up for TLS certificates (``MLFLOW_TRACKING_INSECURE_TLS``,
``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``MLFLOW_TRACKING_CLIENT_CERT_PATH``) or an auth plugin
(``MLFLOW_TRACKING_AUTH``), MLflow's client is used instead, so loopexp never honours less of
a setting than MLflow does.

The runs come back as :class:`StoredRun`, shaped like MLflow's ``Run`` (``run.info.run_id``,
``run.data.tags``), so callers read either alike.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from loopexp.track.store import (
    StoreKind,
    StoreNotReadyError,
    TrackingUnavailableError,
    known_kind,
    redact,
)

#: MLflow client settings this reader does not implement: with one set, MLflow's client reads.
TLS_VARIABLES = (
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",  # an auth plugin of MLflow's client
)
#: Answers worth another try (a busy or restarting server), as MLflow's client retries them.
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Tries of one request (waits 1, 2 s between), then the server is "not reachable".
ATTEMPTS = 3
#: A search page's size: MLflow's servers return at most 1,000 runs per page.
PAGE = 1000


@dataclass(frozen=True)
class RunInfo:
    """The attributes of a run that loopexp reads (a subset of MLflow's ``RunInfo``)."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int
    end_time: int | None = None


@dataclass(frozen=True)
class RunData:
    """A run's tags, params and latest metrics, as dictionaries (like MLflow's ``RunData``)."""

    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredRun:
    """One run as the REST API returned it."""

    info: RunInfo
    data: RunData


def usable(uri: str) -> bool:
    """True when ``uri`` is a tracking server this reader can search (else use MLflow's client)."""
    if known_kind(uri) is not StoreKind.SERVER or urllib.parse.urlparse(uri).username:
        return False  # credentials in the URI: MLflow's client knows what to do with them
    return not any(
        os.environ.get(name, "").strip().lower() not in ("", "false", "0") for name in TLS_VARIABLES
    )


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "loopexp"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN", "")
    if user:
        secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _timeout() -> float:
    try:  # MLflow's own variable (loopexp sets 20 s unless the user did: tracking.HTTP_DEFAULTS)
        return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "20"))
    except ValueError:
        return 20.0


def call(uri: str, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """POST (with ``body``) or GET ``/api/2.0/mlflow/<endpoint>``; None for "does not exist"."""
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/{endpoint}"
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(ATTEMPTS):
        request = urllib.request.Request(url, data=data, headers=_headers())
        try:
            with urllib.request.urlopen(request, timeout=_timeout()) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            answer = _error(exc)
            if exc.code == 404 and answer.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
                return None
            if exc.code not in RETRY_STATUSES or attempt + 1 == ATTEMPTS:
                raise _refused(uri, endpoint, exc.code, answer) from None
        except (OSError, ValueError) as exc:  # refused, reset, timed out, not JSON
            if attempt + 1 == ATTEMPTS:
                raise TrackingUnavailableError(uri, exc) from None
        time.sleep(2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _error(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        answer = json.loads(exc.read() or b"{}")
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _refused(uri: str, endpoint: str, status: int, answer: dict[str, Any]) -> Exception:
    if status == 401:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        return StoreNotReadyError(
            f"MLflow tracking server {redact(uri)} refused the sign-in "
            f"({f'user {user!r}' if user else 'no credentials'}). Set your account: export "
            "MLFLOW_TRACKING_USERNAME=<user> MLFLOW_TRACKING_PASSWORD=<password>"
        )
    if status in RETRY_STATUSES:
        return TrackingUnavailableError(uri, f"{endpoint} answered {status}")
    message = str(answer.get("message", ""))[:300]
    return StoreNotReadyError(
        f"MLflow tracking server {redact(uri)} answered {status} to {endpoint}: {message}"
    )


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the experiment named ``name`` (None when there is none)."""
    found = call(
        uri, "experiments/get-by-name?" + urllib.parse.urlencode({"experiment_name": name})
    )
    return None if found is None else str(found["experiment"]["experiment_id"])


def _run(raw: dict[str, Any]) -> StoredRun:
    info, data = raw.get("info", {}), raw.get("data", {})
    end = info.get("end_time")
    return StoredRun(
        RunInfo(
            run_id=info["run_id"],
            experiment_id=str(info["experiment_id"]),
            run_name=info.get("run_name", ""),
            status=info.get("status", ""),
            start_time=int(info.get("start_time", 0)),
            end_time=None if end is None else int(end),
        ),
        RunData(
            tags={t["key"]: t.get("value", "") for t in data.get("tags", [])},
            params={p["key"]: p.get("value", "") for p in data.get("params", [])},
            metrics={m["key"]: float(m.get("value", "nan")) for m in data.get("metrics", [])},
        ),
    )


def search_runs(
    uri: str, experiment_id: str, where: str = "", latest: int | None = None
) -> list[StoredRun]:
    """The experiment's runs matching ``where``, newest first; at most ``latest`` (pages of 1,000).

    One request per page, ordered by start time on the server (MLflow's ``runs/search``).
    """
    runs: list[StoredRun] = []
    token = None
    while latest is None or len(runs) < latest:
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "filter": where,
            "max_results": min(PAGE, latest - len(runs)) if latest else PAGE,
            "order_by": ["attributes.start_time DESC"],
        }
        if token:
            body["page_token"] = token
        page = call(uri, "runs/search", body) or {}
        runs += [_run(raw) for raw in page.get("runs", [])]
        token = page.get("next_page_token")
        if not token:
            break
    return runs


def list_runs(
    campaign: str, uri: str, latest: int | None = None, where: str = ""
) -> list[StoredRun]:
    """A campaign's runs (matching ``where``), oldest first; only the ``latest`` (see tracking)."""
    found = experiment_id(uri, campaign)
    return [] if found is None else search_runs(uri, found, where, latest)[::-1]


__all__ = [
    "RunData",
    "RunInfo",
    "StoredRun",
    "call",
    "experiment_id",
    "list_runs",
    "search_runs",
    "usable",
]
