"""MLflow logging: one experiment per campaign, one run per analysed iteration.

Each run carries what :mod:`loopexp.track.describe` says about it (a name that says what happened,
a summary in words, headline metrics named the same in every iteration), the per-variant figures
for those who dig, and the run's artifacts.

Schedulers need runs that end: a run is FINISHED with all its artifacts or FAILED, never left
RUNNING (:func:`mark_stale_runs` cleans up after a killed process), and a stopped tracking server
fails fast and clearly (:class:`TrackingUnavailableError`) instead of retrying for minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopexp.analysis.results import ExperimentResults
from loopexp.core import config
from loopexp.core import tags as tag
from loopexp.core.processes import pid_alive
from loopexp.design.spec import ExperimentSpec
from loopexp.track import rest
from loopexp.track.client import HTTP_DEFAULTS, configure_http  # noqa: F401 (imported here too)
from loopexp.track.client import artifact_root as _artifact_root
from loopexp.track.client import mlflow_client as _client
from loopexp.track.client import reachable as _reachable
from loopexp.track.describe import (
    detail_tables,
    lift_text,
    results_metrics,
    run_description,
    run_name,
    spec_params,
    summary_line,
)
from loopexp.track.digest import digest_tags
from loopexp.track.locks import file_lock, short_hash  # noqa: F401 (callers import them here)
from loopexp.track.store import TrackingUnavailableError  # noqa: F401 (callers import it here)
from loopexp.track.views import (
    VIEW_TAG,
    is_remote,
    resolve_tracking_uri,
    ui_hint,  # noqa: F401 (moved to the light views; callers import it here)
    view_state,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

#: The experiment tag that makes MLflow 3.x open a campaign on its runs table (not on GenAI traces).
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(client: MlflowClient, campaign: str, uri: str) -> str:
    """The campaign's experiment id (created when new), tagged to open on the runs table."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    experiment = client.get_experiment_by_name(campaign)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                campaign, artifact_location=_artifact_root(uri)
            )
        except MlflowException:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(campaign)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    tags = {} if experiment is None else experiment.tags
    if tags.get(EXPERIMENT_KIND_TAG[0]) != EXPERIMENT_KIND_TAG[1]:
        client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND_TAG)
    if tags.get(VIEW_TAG) != view_state():
        client.set_experiment_tag(experiment_id, VIEW_TAG, view_state())
    return experiment_id


def run_identity_tags(
    spec: ExperimentSpec, spec_sha256: str, fingerprint: str, attempt_id: str
) -> dict[str, str]:
    """Tags that identify a run (idempotency) and its owner (stale-run detection)."""
    flow = (
        {tag.FLOW_ID: spec.flow.id, tag.FLOW_VERSION: spec.flow.version()}
        if spec.flow is not None
        else {}
    )
    return {
        **flow,
        tag.CAMPAIGN: spec.campaign,
        tag.ITERATION: str(spec.iteration),
        tag.EXPERIMENT: spec.name,
        tag.TEST_TYPE: spec.test_type.value,
        "loopexp.spec_sha256": spec_sha256,
        tag.DATA_FINGERPRINT: fingerprint,
        tag.PARENT_RUN_ID: spec.parent_run_id or "",
        tag.ATTEMPT: attempt_id,
        tag.HOST: socket.gethostname(),
        tag.PID: str(os.getpid()),
    }


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_finished_run(
    campaign: str, spec_sha256: str, fingerprint: str, tracking_uri: str
) -> Run | None:
    """The FINISHED run of this spec on this data, if one was logged (the idempotency check)."""
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment = client.get_experiment_by_name(campaign)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`loopexp.spec_sha256` = {_quoted(spec_sha256)} AND "
            f"tags.`loopexp.data_fingerprint` = {_quoted(fingerprint)} AND "
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    return runs[0] if runs else None


def mark_stale_runs(spec: ExperimentSpec, tracking_uri: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this experiment and iteration whose process is gone.

    Call it while holding the experiment's lock: no live loopexp process is then logging this
    experiment on this machine. A run is stale when it was started on this host by a process that
    no longer exists, or on another host more than ``config.stale_after_hours()`` ago.
    """
    stale = []
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment = client.get_experiment_by_name(spec.campaign)
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`loopexp.experiment` = {_quoted(spec.name)} AND "
            f"tags.`loopexp.iteration` = '{spec.iteration}' AND attributes.status = 'RUNNING'",
        )
        host = socket.gethostname()
        for run in runs:
            tags = run.data.tags
            age_hours = (time.time() * 1000 - run.info.start_time) / 3.6e6
            same_host = tags.get(tag.HOST) == host
            pid = int(tags.get(tag.PID, "0") or 0)
            if (same_host and pid != os.getpid() and not pid_alive(pid)) or (
                not same_host and age_hours > config.stale_after_hours()
            ):
                client.set_tag(
                    run.info.run_id,
                    tag.FAILURE,
                    f"stale: its process (pid {pid} on {tags.get(tag.HOST, '?')}) ended "
                    "before the run finished; marked FAILED by a later run",
                )
                client.set_terminated(run.info.run_id, status="FAILED")
                stale.append(run.info.run_id)
    return stale


@dataclass(frozen=True)
class LoggedRun:
    """Where a run was logged."""

    run_id: str
    experiment_id: str
    tracking_uri: str


def start_run(
    spec: ExperimentSpec,
    name: str,
    tags: dict[str, str],
    tracking_uri: str,
) -> LoggedRun:
    """Create a RUNNING run in the campaign's experiment; end it with :func:`end_run`."""
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment_id = ensure_experiment(client, spec.campaign, tracking_uri)
        run = client.create_run(experiment_id, run_name=name, tags=tags)
    return LoggedRun(run.info.run_id, experiment_id, tracking_uri)


def log_contents(
    run: LoggedRun,
    results: ExperimentResults,
    spec: ExperimentSpec,
    artifacts: Iterable[Path] = (),
) -> None:
    """Params, metrics, results tables and artifacts of an analysed run, in few requests.

    Params and metrics go in one ``log_batch`` (more only past MLflow's batch limits). The tables
    are written here in ``MlflowClient.log_table``'s format (JSON ``orient="split"``) and uploaded
    as one folder, with MLflow's ``mlflow.loggedArtifacts`` tag in the batch: ``log_table`` costs
    four requests per table (list, upload, get the run, set the tag), 20 of a run's ~40 on a
    server (issue 25), and MLflow's UI and ``mlflow.load_table`` read the result alike.
    """
    from mlflow.entities import Metric, Param, RunTag  # noqa: PLC0415 (lazy, see _client)
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS  # noqa: PLC0415

    now = int(time.time() * 1000)
    params = [Param(k, v) for k, v in spec_params(spec).items()]
    metrics = [Metric(k, float(v), now, 0) for k, v in results_metrics(results).items()]
    with tempfile.TemporaryDirectory(prefix="loopexp-tables-") as folder:
        tables = Path(folder) / "tables"
        tables.mkdir()
        logged = []
        for name, frame in detail_tables(results).items():
            frame.to_json(tables / f"{name}.json", orient="split", index=False, date_format="iso")
            logged.append({"path": f"tables/{name}.json", "type": "table"})
        tags = [RunTag(MLFLOW_LOGGED_ARTIFACTS, json.dumps(logged))] if logged else []
        with _reachable(run.tracking_uri):
            client = _client(run.tracking_uri)
            for batch in _batches(params, metrics, tags):
                client.log_batch(run.run_id, **batch)
        log_files(run, [tables, *artifacts] if logged else artifacts)


#: MLflow's ``log_batch`` limits: 100 params, 1,000 metrics, 100 tags, 1,000 entities in all.
BATCH_LIMITS = {"params": 100, "metrics": 1000, "tags": 100}
BATCH_TOTAL = 1000


def _batches(params: list[Any], metrics: list[Any], tags: list[Any]) -> Iterator[dict[str, list]]:
    """``log_batch`` keyword arguments covering everything, each within MLflow's limits."""
    left = {"params": list(params), "metrics": list(metrics), "tags": list(tags)}
    while any(left.values()):
        batch: dict[str, list] = {}
        room = BATCH_TOTAL
        for key, limit in BATCH_LIMITS.items():
            take = min(limit, room, len(left[key]))
            batch[key], left[key] = left[key][:take], left[key][take:]
            room -= take
        yield batch


#: Files uploaded at once to a tracking server: MLflow's client sends one PUT per file (each
#: proxied by the server to the bucket) one after another; a run has ~15 (issue 25).
UPLOAD_THREADS = 4


def _uploads(artifacts: Iterable[Path], artifact_path: str | None) -> list[tuple[str, str | None]]:
    """(local file, run-relative folder) of every file of ``artifacts`` (folders walked)."""
    found: list[tuple[str, str | None]] = []
    for artifact in map(Path, artifacts):
        if artifact.is_dir():
            base = f"{artifact_path}/{artifact.name}" if artifact_path else artifact.name
            for file in sorted(p for p in artifact.rglob("*") if p.is_file()):
                sub = file.parent.relative_to(artifact).as_posix()
                found.append((str(file), base if sub == "." else f"{base}/{sub}"))
        elif artifact.exists():
            found.append((str(artifact), artifact_path))
    return found


def log_files(run: LoggedRun, artifacts: Iterable[Path], artifact_path: str | None = None) -> None:
    """Attach files (or folders, file by file) to a run; to a server, several uploads at once."""
    uploads = _uploads(artifacts, artifact_path)
    with _reachable(run.tracking_uri):
        client = _client(run.tracking_uri)
        for local, folder in uploads[:1]:  # alone: MLflow then knows the run's artifact URI
            client.log_artifact(run.run_id, local, artifact_path=folder)
        threads = UPLOAD_THREADS if is_remote(run.tracking_uri) else 1
        with ThreadPoolExecutor(threads) as pool:
            # list(): every upload waited for, the first failure raised
            list(pool.map(lambda up: client.log_artifact(run.run_id, up[0], up[1]), uploads[1:]))


def end_run(run: LoggedRun, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
    """Set final tags (one request) and end the run as FINISHED or FAILED."""
    from mlflow.entities import RunTag  # noqa: PLC0415 (lazy, see _client)

    with _reachable(run.tracking_uri):
        client = _client(run.tracking_uri)
        if tags:
            client.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run.run_id, status=status)


def start_campaign_run(
    campaign: str, name: str, tags: dict[str, str], tracking_uri: str
) -> LoggedRun | None:
    """Create a RUNNING run in the campaign's existing experiment (None when it has none)."""
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment = client.get_experiment_by_name(campaign)
        if experiment is None:
            return None
        run = client.create_run(experiment.experiment_id, run_name=name, tags=tags)
    return LoggedRun(run.info.run_id, experiment.experiment_id, tracking_uri)


def reopen_run(
    run_id: str, experiment_id: str, tracking_uri: str, name: str, tags: dict[str, str]
) -> LoggedRun:
    """An existing run under a new name and tags, to log to and end with :func:`end_run`.

    For the runs loopexp updates in place (the campaign's report run) rather than adding a copy;
    it keeps its status meanwhile, so it is never left RUNNING.
    """
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        client.update_run(run_id, name=name)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    return LoggedRun(run_id, experiment_id, tracking_uri)


def log_metric(run: LoggedRun, key: str, value: float) -> None:
    """Log one metric on a run."""
    with _reachable(run.tracking_uri):
        _client(run.tracking_uri).log_metric(run.run_id, key, value)


def log_run(
    results: ExperimentResults,
    spec: ExperimentSpec,
    artifacts: Iterable[Path] = (),
    tracking_uri: str | None = None,
) -> tuple[str, str]:
    """Log one analysed iteration as a FINISHED MLflow run; return ``(run_id, experiment_id)``."""
    uri = resolve_tracking_uri(tracking_uri)
    tags = {
        **run_identity_tags(
            spec, results.experiment.spec_sha256, results.data.fingerprint, "python"
        ),
        **decision_tags(results, spec),
        **digest_tags(results),
    }
    run = start_run(spec, run_name(results), tags, uri)
    try:
        log_contents(run, results, spec, artifacts)
    except BaseException:
        with contextlib.suppress(Exception):
            end_run(run, "FAILED")
        raise
    end_run(run)
    return run.run_id, run.experiment_id


def decision_tags(results: ExperimentResults, spec: ExperimentSpec) -> dict[str, str]:
    """Tags of an analysed run: the decision, the summary line and the run page's description."""
    d = results.decision
    final_read = {tag.DECISION_FINAL_READ_AT: d.final_read_at} if d.final_read_at else {}
    return {
        tag.DECISION_STATUS: d.status.value,
        tag.DECISION_WINNER: d.winner or "none",
        tag.SUMMARY: summary_line(results, spec),
        tag.LIFT: lift_text(results),
        "mlflow.note.content": run_description(results, spec),
    } | final_read


def list_runs(
    campaign: str, tracking_uri: str, latest: int | None = None, where: str = ""
) -> list[Run]:
    """The campaign's runs (matching the filter ``where``), oldest first; only the ``latest``.

    On a tracking server the search goes through MLflow's REST API without MLflow's client
    (:mod:`loopexp.track.rest`, runs shaped alike); pages of 1,000, newest first.
    """
    if rest.usable(tracking_uri):
        return rest.list_runs(campaign, tracking_uri, latest, where)  # type: ignore[return-value]
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment = client.get_experiment_by_name(campaign)
        if experiment is None:
            return []
        runs: list[Run] = []
        token = None
        while latest is None or len(runs) < latest:  # pages: a store returns 1,000 at most
            page = client.search_runs(
                [experiment.experiment_id],
                where,
                order_by=["attributes.start_time DESC"],
                max_results=min(1000, latest - len(runs)) if latest else 1000,
                page_token=token,
            )
            runs += page
            token = page.token
            if not token:
                break
        return runs[::-1]


def experiment_id_of(campaign: str, tracking_uri: str) -> str | None:
    """The id of the campaign's experiment, or None when nothing was logged yet."""
    if rest.usable(tracking_uri):
        return rest.experiment_id(tracking_uri, campaign)
    with _reachable(tracking_uri):
        experiment = _client(tracking_uri).get_experiment_by_name(campaign)
    return experiment.experiment_id if experiment else None


def download_artifact(run_id: str, path: str, tracking_uri: str, dst: Path) -> Path:
    """Download one artifact of a run into ``dst``; return the local path."""
    with _reachable(tracking_uri):
        local = _client(tracking_uri).download_artifacts(run_id, path, str(dst))
    return Path(local)


def log_artifact(
    run_id: str, path: Path, tracking_uri: str | None = None, artifact_path: str | None = None
) -> None:
    """Attach one more file to a (possibly finished) run."""
    client = _client(resolve_tracking_uri(tracking_uri))
    client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def set_tag(run_id: str, key: str, value: str, tracking_uri: str | None = None) -> None:
    """Set one tag on a (possibly finished) run."""
    _client(resolve_tracking_uri(tracking_uri)).set_tag(run_id, key, value)


def run_tags(run: Any) -> dict[str, str]:
    """The tags of an MLflow run entity."""
    return dict(run.data.tags)
