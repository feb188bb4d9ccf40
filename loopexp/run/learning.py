"""What a scheduled run learns for the next spec, gathered from its own data and MLflow.

The same :func:`loopexp.learn.iteration.next_iteration` the demo uses writes the next spec, with
the send-time analysis of the run's own events (:mod:`loopexp.learn.sendtime`, kept in the attempt
as ``send_time.json`` and logged with the run), adaptive weights from the results when the spec asks
for ``allocation:``, and the planning baseline shrunk with the campaign's earlier iterations read
back from MLflow.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

from loopexp.analysis.results import ExperimentResults
from loopexp.core import tags as tag
from loopexp.design.parts import EventsSource
from loopexp.design.spec import ExperimentSpec, write_spec
from loopexp.learn.iteration import LoopError, learned_from, next_iteration
from loopexp.learn.policy.step import PolicyStep, policy_step, read_step, write_step
from loopexp.learn.sendtime import LEARNING_METRIC, SendTimeAnalysis, send_time_from_files
from loopexp.track.closed_loop import SEND_TIME_ARTIFACT, campaign_runs
from loopexp.track.digest import read_digest
from loopexp.track.tracking import (
    LoggedRun,
    TrackingUnavailableError,
    download_artifact,
    log_files,
    log_metric,
)


def analyse_send_time(
    spec: ExperimentSpec, events: str | Path, assignment: str | Path, attempt: Path
) -> SendTimeAnalysis | None:
    """The send-time analysis of a spec with send slots, written into the attempt folder."""
    if spec.send_time is None:
        return None
    analysis = send_time_from_files(events, assignment, spec, metric=LEARNING_METRIC)
    (attempt / SEND_TIME_ARTIFACT).write_text(analysis.model_dump_json(indent=2), encoding="utf-8")
    return analysis


def analyse_policy(
    spec: ExperimentSpec, events: str | Path, assignment: str | Path, attempt: Path
) -> PolicyStep | None:
    """The policy step of a spec with a ``policy:`` section, kept as policy.json (issue 27)."""
    step = policy_step(spec, events, assignment)
    if step is not None:
        write_step(step, attempt)
    return step


def read_send_time(attempt: Path) -> SendTimeAnalysis | None:
    """The send-time analysis an attempt kept (None: the spec has no send slots)."""
    path = attempt / SEND_TIME_ARTIFACT
    if not path.exists():
        return None
    return SendTimeAnalysis.model_validate(json.loads(path.read_text(encoding="utf-8")))


def earlier_history(
    spec: ExperimentSpec, uri: str
) -> tuple[list[ExperimentResults], list[tuple[float, float]]]:
    """The campaign's iterations before ``spec``'s: (results, primary log lifts from digests).

    A run with a digest tag gives its primary lifts without a download (issue 25: one search,
    not one ``results.json`` per earlier iteration); the others' results are downloaded.
    """
    history, lifts = [], []
    with tempfile.TemporaryDirectory(prefix="loopexp-history-") as folder:
        for run in campaign_runs(spec.campaign, uri):
            if int(run.data.tags[tag.ITERATION]) >= spec.iteration:
                continue
            digest = read_digest(run.data.tags)
            if digest is not None:
                lifts += [(p.log_lift, p.se) for p in digest.primary]
                continue
            try:
                path = download_artifact(run.info.run_id, "results.json", uri, Path(folder))
            except TrackingUnavailableError:
                raise
            except Exception:  # MLflow raises several types for a missing artifact
                continue
            history.append(ExperimentResults.read_json(path))
    return history, lifts


def log_policy_gain(run: LoggedRun, step: PolicyStep) -> None:
    """A deployed policy's projected and realised gain (and interval) as metrics of its run.

    Beside ``policy.json``: marketers compare iterations' gains in the MLflow UI's charts.
    """
    for name, gain in (
        ("policy_gain_projected", step.projected),
        ("policy_gain_realised", step.realised),
    ):
        if gain is not None:
            log_metric(run, name, gain.value)
            log_metric(run, f"{name}_ci_low", gain.ci_low)
            log_metric(run, f"{name}_ci_high", gain.ci_high)


def write_next_spec(
    spec: ExperimentSpec,
    results: ExperimentResults,
    run: LoggedRun,
    attempt: Path,
    folder: Path,
    spec_folder: Path,
) -> tuple[Path | None, str]:
    """The next iteration's spec with what this one learned (attached to the run).

    The decision stands without a next spec: when none can be drafted, the reason is returned.
    """
    history, earlier_lifts = earlier_history(spec, run.tracking_uri)
    learned = learned_from(spec, results, read_send_time(attempt), history, earlier_lifts)
    step = read_step(attempt)  # issue 27: the policy learned from this send, if the spec asked
    if step is not None:
        learned = replace(learned, policy=step.next_policy)
        log_policy_gain(run, step)
    try:
        nxt = next_iteration(spec, results, learned, parent_run_id=run.run_id)
    except LoopError as exc:
        return None, str(exc)
    if nxt.events is not None:  # its export folder, named from where the next spec is written
        nxt = nxt.model_copy(update={"events": nxt.events.rebased(spec_folder, folder)})
    if nxt.data.history is not None:  # issue 28: the event history, named the same way
        moved = EventsSource(path=nxt.data.history).rebased(spec_folder, folder).path
        nxt = nxt.model_copy(update={"data": nxt.data.model_copy(update={"history": moved})})
    path = write_spec(nxt, folder / f"{nxt.campaign}-iter{nxt.iteration}.yaml")
    log_files(run, [path], artifact_path="next_spec")
    return path, ""


__all__ = [
    "analyse_policy",
    "analyse_send_time",
    "earlier_history",
    "log_policy_gain",
    "read_send_time",
    "write_next_spec",
]
