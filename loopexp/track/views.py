"""Where runs are, the links loopexp prints and the saved runs-table view they open.

Light on purpose (no MLflow, no pandas): ``loopexp ui`` resolves the store and starts the server
before anything heavy is imported.

A marketer follows a link to a campaign's runs table: it must open the model-training view (not
MLflow 3's GenAI traces, ``workflowType=machine_learning``) with the decision, the lift with its
interval and the one-line summary as columns. MLflow 3 shows no tag column by default, but opens a
*shared view* named in the link (``viewStateShareKey``) from an experiment tag
``mlflow.sharedViewState.<key>`` holding the page state as JSON: loopexp writes that tag on each
campaign's experiment (:func:`loopexp.track.tracking.ensure_experiment`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

from loopexp.core import tags as tag
from loopexp.track.store import redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

#: The saved view loopexp's links open (``?viewStateShareKey=loopexp``): the runs table with the
#: decision, the lift with its interval and the one-line summary as columns. MLflow 3 reads a
#: shared view from the experiment tag ``mlflow.sharedViewState.<key>`` (JSON of the page state).
VIEW_KEY = "loopexp"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_COLUMNS = (
    f"tags.`{tag.DECISION_STATUS}`",
    f"tags.`{tag.LIFT}`",
    f"tags.`{tag.SUMMARY}`",
)
#: Widths (px) that show each column's text whole: a lift with its interval, a summary's start.
VIEW_WIDTHS = {VIEW_COLUMNS[0]: 140, VIEW_COLUMNS[1]: 300, VIEW_COLUMNS[2]: 600}


def view_state() -> str:
    """The saved runs-table view (JSON): newest first, the decision columns shown."""
    return json.dumps(
        {
            "orderByKey": "attributes.start_time",
            "orderByAsc": False,
            "selectedColumns": list(VIEW_COLUMNS),
            "columnOrder": list(VIEW_COLUMNS),  # MLflow sets the widths of these columns only
            "columnWidths": VIEW_WIDTHS,
            "runsHiddenMode": "SHOW_ALL",
        },
        separators=(",", ":"),
    )


def experiment_url(base_url: str, experiment_id: str | None = None) -> str:
    """The link to a campaign's runs table (model-training view) on a server at ``base_url``."""
    base = base_url.rstrip("/")
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    view = f"&viewStateShareKey={VIEW_KEY}" if experiment_id else ""
    return f"{base}/#/{page}?workflowType=machine_learning{view}"


def is_remote(uri: str) -> bool:
    """True for a tracking server (http/https), False for a local store."""
    return urlparse(uri).scheme in ("http", "https")


def resolve_tracking_uri(uri: str | None = None, base: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db`` in ``base`` (the working folder).

    Paths are made absolute.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI  # MLflow's own
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///"))
        uri = f"sqlite:///{((base or Path.cwd()) / path).resolve()}"
    return uri


def ui_hint(
    tracking_uri: str, experiment_id: str | None = None, campaign: str | None = None
) -> str:
    """How to see the runs: the URL of a server, or the ``loopexp ui`` command for a local store.

    With ``campaign``, the command is ``loopexp ui … --campaign NAME``, which prints the link.
    """
    uri = resolve_tracking_uri(tracking_uri)
    if is_remote(uri):
        return experiment_url(uri, experiment_id)
    command = f"loopexp ui --tracking-uri {redact(uri)}" + (
        f" --campaign {campaign}" if campaign else ""
    )
    return f"{command}  then open {experiment_url('http://127.0.0.1:5000', experiment_id)}"
