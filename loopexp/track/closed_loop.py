"""The closed-loop history read back from MLflow, and the report logged back to it.

:func:`build_report` reads the campaign's analysis runs through the MLflow API (the
``loopexp.iteration`` and ``loopexp.parent_run_id`` tags, and each run's ``results.json`` and
``send_time.json`` artifacts) into the typed records of :mod:`loopexp.learn.history`, which
assembles the report: the KPI trend, the decisions, the cumulative lift (raw and shrunk for
winner's curse), incremental revenue, link clicks and what to test next.
:mod:`loopexp.report.closed_loop` renders it; :func:`log_report` logs the rendered page as an
artifact of the campaign's one ``closed-loop report`` run (tag ``loopexp.kind=report``; each
report updates it; the iteration listing skips such runs).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from loopexp.analysis.results import ExperimentResults
from loopexp.core import tags as tag
from loopexp.core.errors import InputError
from loopexp.learn.history import (
    ClosedLoopReport,
    IterationRecord,
    PrimaryLift,
    assemble_report,
    iteration_record,
    primary_lifts,
    record_from_digest,
)
from loopexp.track.digest import read_digest
from loopexp.track.store import redact
from loopexp.track.tracking import (
    TrackingUnavailableError,
    download_artifact,
    end_run,
    file_lock,
    list_runs,
    log_files,
    log_metric,
    reopen_run,
    resolve_tracking_uri,
    short_hash,
    start_campaign_run,
)

#: Artifact a run may carry with its send-time analysis (see :mod:`loopexp.learn.sendtime`).
SEND_TIME_ARTIFACT = "send_time.json"


class ReportError(InputError):
    """The report cannot be built (no such campaign, no analysed iteration)."""


# --- reading back -------------------------------------------------------------------------------


def campaign_runs(campaign: str, tracking_uri: str | None = None) -> list[Any]:
    """The campaign's FINISHED analysis runs, one per iteration (the latest), oldest first."""
    uri = resolve_tracking_uri(tracking_uri)
    latest: dict[int, Any] = {}
    for run in list_runs(campaign, uri, where="attributes.status = 'FINISHED'"):
        tags = run.data.tags
        if tags.get(tag.KIND) == "report" or run.info.status != "FINISHED":
            continue
        iteration = tags.get(tag.ITERATION, "")
        if not iteration.isdigit():
            continue
        latest[int(iteration)] = run  # list_runs is oldest first: the last one wins
    return [latest[i] for i in sorted(latest)]


def artifact_json(run_id: str, name: str, uri: str, folder: Path) -> dict | None:
    """A run's JSON artifact, downloaded into ``folder`` and parsed (None when it has none)."""
    try:
        path = download_artifact(run_id, name, uri, folder)
    except TrackingUnavailableError:
        raise
    except Exception:  # MLflow raises several types for a missing artifact
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def campaign_subjects(
    campaign: str, tracking_uri: str | None = None, runs: list[Any] | None = None
) -> dict[int, dict[str, str]]:
    """Per iteration, each variant's subject line (or content, send time) from the run params.

    The closed-loop report puts them beside the variant ids; results.json does not carry them.
    ``runs``: the campaign's runs when already searched (:func:`campaign_runs`).
    """
    out: dict[int, dict[str, str]] = {}
    for run in campaign_runs(campaign, tracking_uri) if runs is None else runs:
        iteration = int(run.data.tags[tag.ITERATION])
        for key, value in run.data.params.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "variant" and parts[2] != "weight":
                out.setdefault(iteration, {}).setdefault(parts[1], " ".join(value.split()))
    return out


# --- the report --------------------------------------------------------------------------------


def build_report(
    campaign: str,
    tracking_uri: str | None = None,
    workdir: str | Path | None = None,
    runs: list[Any] | None = None,
) -> ClosedLoopReport:
    """Read every iteration of ``campaign`` back from MLflow and assemble the report.

    One search of the store: each run's digest tag (:mod:`loopexp.track.digest`) holds what the
    report needs; only runs without one (logged before it) have their ``results.json`` downloaded.
    ``runs``: the campaign's runs when already searched (:func:`campaign_runs`).
    """
    uri = resolve_tracking_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in logs
    runs = campaign_runs(campaign, uri) if runs is None else runs
    if not runs:
        raise ReportError(
            f"campaign {campaign!r} has no analysed iteration in {redact(uri)}: run `loopexp run` "
            "(or `loopexp demo`) first, or check --tracking-uri and the campaign name"
        )
    folder = Path(workdir or tempfile.mkdtemp(prefix="loopexp-report-"))
    records: list[IterationRecord] = []
    primaries: list[list[PrimaryLift]] = []
    previous: str | None = None
    for run in runs:
        found = _iteration(run, previous, uri, folder)
        if found is None:
            continue
        records.append(found[0])
        primaries.append(found[1])
        previous = run.info.run_id
    if not records:
        raise ReportError(f"campaign {campaign!r}: no run has a results.json artifact")
    return assemble_report(campaign, uri, records, primaries)


def _iteration(
    run: Any, previous: str | None, uri: str, folder: Path
) -> tuple[IterationRecord, list[PrimaryLift]] | None:
    """One run's record and primary lifts: from its digest tag, else from its files."""
    run_id, tags = run.info.run_id, run.data.tags
    lineage = {
        "run_id": run_id,
        "parent_run_id": tags.get(tag.PARENT_RUN_ID) or None,
        "previous_run_id": previous,
        "next_spec": tags.get(tag.NEXT_SPEC, ""),
        "flow_version": tags.get(tag.FLOW_VERSION) or None,
    }
    digest = read_digest(tags)
    if digest is not None:
        return record_from_digest(digest, **lineage), digest.primary
    sub = folder / run_id
    sub.mkdir(parents=True, exist_ok=True)
    raw = artifact_json(run_id, "results.json", uri, sub)
    if raw is None:
        return None
    results = ExperimentResults.model_validate(raw)
    record = iteration_record(
        results,
        **lineage,
        send_time=artifact_json(run_id, SEND_TIME_ARTIFACT, uri, sub),
        policy=artifact_json(run_id, "policy.json", uri, sub),  # issue 27
    )
    return record, primary_lifts(results)


def report_run_of(campaign: str, uri: str) -> Any | None:
    """The campaign's report run (the newest, if an older loopexp made several), or None."""
    only = f"tags.`{tag.KIND}` = 'report'"  # one small search, not every iteration's run
    runs = list_runs(campaign, uri, where=only)
    return runs[-1] if runs else None


def log_report(report: ClosedLoopReport, html_path: str | Path) -> str:
    """Log the HTML (and the report as JSON) to the campaign's report run; return its run id.

    A campaign has one report run, updated by each report (its artifacts replaced, its name,
    tags and metric set anew), so the runs table does not fill with copies. It ends FINISHED, or
    FAILED when logging failed (the next report repairs it).
    """
    uri = report.tracking_uri
    html_path = Path(html_path)
    json_path = html_path.with_suffix(".json")
    json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    name = f"closed-loop report · {len(report.iterations)} iteration(s)"
    tags = {
        tag.KIND: "report",
        tag.CAMPAIGN: report.campaign,
        tag.REPORT_ITERATIONS: str(len(report.iterations)),
        tag.PARENT_RUN_ID: report.iterations[-1].run_id,
    }
    # One report at a time per campaign and store: two would each create "the" report run.
    with file_lock(f"report-{short_hash(uri, report.campaign)}", timeout=300):
        existing = report_run_of(report.campaign, uri)
        if existing is not None:
            run = reopen_run(existing.info.run_id, existing.info.experiment_id, uri, name, tags)
        else:
            run = start_campaign_run(report.campaign, name, tags, uri)
        if run is None:
            raise ReportError(
                f"campaign {report.campaign!r} has no MLflow experiment in {redact(uri)}"
            )
        status = "FAILED"
        try:
            log_files(run, [html_path, json_path], artifact_path="report")
            if report.cumulative.value is not None:
                log_metric(run, "cumulative.rel_lift", report.cumulative.value)
            status = "FINISHED"
        finally:  # never leave a run RUNNING
            end_run(run, status)
    return run.run_id


__all__ = [
    "SEND_TIME_ARTIFACT",
    "ReportError",
    "artifact_json",
    "build_report",
    "campaign_runs",
    "campaign_subjects",
    "log_report",
    "report_run_of",
]
