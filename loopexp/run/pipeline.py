"""One iteration of the loop, end to end: the path the CLI, the scheduler and the demo all take.

spec → (assignment, events) → input checks (seconds, before a kernel starts) → notebook (metrics in
DuckDB → statistics → decision → results.json) → decision.json + HTML report → MLflow run → the
next iteration's spec.

What a scheduler can rely on:

- Idempotent: the same spec on the same data (same ``spec_sha256`` and data fingerprint) reports
  the FINISHED run already logged; no second run, no rewritten next spec (unless ``force``).
- One run of an experiment at a time: a lock per experiment (``flock``, released even on kill -9).
- Each attempt writes into its own fresh folder ``<out>/attempts/<attempt id>/``; only a complete
  attempt is published to ``<out>/`` (``latest.json`` says which attempt and run it is), so a killed
  or failed run never leaves another run's decision looking current.
- A failing cell: the MLflow run is FAILED with the partial notebook attached; no decision written.
- A RUNNING run left by a killed process is marked FAILED on the next start.
- Tracking server down: the analysis is kept in the attempt folder, and ``loopexp upload <folder>``
  logs it (and writes the next spec) later.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopexp.analysis.analyze import data_fingerprint
from loopexp.analysis.results import ExperimentResults
from loopexp.core import tags as tag
from loopexp.core.errors import StateError
from loopexp.design.spec import ExperimentSpec, load_spec
from loopexp.run.attempts import (
    ATTEMPTS,
    LATEST,
    MANIFEST,
    new_attempt_id,
    prune_attempts,
    publish,
    read_json,
    unpublish,
    write_json,
)
from loopexp.run.checks import check_inputs, check_store
from loopexp.run.failure import fail_attempt, record_failure, render_quietly, say
from loopexp.run.learning import analyse_policy, analyse_send_time, write_next_spec
from loopexp.run.lock import experiment_lock
from loopexp.run.notebook import (
    ANALYZE_NOTEBOOK,
    FLOW_NOTEBOOK,
    NotebookFailedError,
    execute_or_fail,
)
from loopexp.run.outputs import write_decision
from loopexp.track.closed_loop import SEND_TIME_ARTIFACT
from loopexp.track.describe import run_name
from loopexp.track.digest import digest_tags
from loopexp.track.store import redact
from loopexp.track.tracking import (
    LoggedRun,
    TrackingUnavailableError,
    decision_tags,
    download_artifact,
    end_run,
    find_finished_run,
    log_contents,
    mark_stale_runs,
    resolve_tracking_uri,
    run_identity_tags,
    start_run,
)

Progress = Callable[[str], None]


class NotLoggedError(StateError):
    """The analysis finished but could not be logged; it is kept locally for ``loopexp upload``."""

    def __init__(self, attempt_dir: Path, cause: TrackingUnavailableError):
        self.attempt_dir = attempt_dir
        self.cause = cause
        super().__init__(
            f"{cause}. The analysis finished and is kept in {attempt_dir}; once the server is "
            f"up, log it (and write the next spec) with:\n  loopexp upload {attempt_dir}"
        )


@dataclass(frozen=True)
class IterationOutcome:
    """What one iteration left behind, and where."""

    results: ExperimentResults
    run_id: str
    experiment_id: str
    tracking_uri: str
    output_dir: Path
    executed_notebook: Path
    results_path: Path
    decision_path: Path
    report_path: Path
    next_spec_path: Path | None
    """None when no next iteration could be drafted; ``next_spec_note`` says why."""
    next_spec_note: str = ""
    run_dir: Path | None = None
    """This attempt's own folder (``<out>/attempts/<attempt id>``); None for a reused run."""
    reused: bool = False
    """True when the same spec and data had been analysed before: the existing run is reported."""
    stale_runs: tuple[str, ...] = ()
    """RUNNING runs of killed processes this start marked FAILED."""


def run_iteration(
    spec_path: str | Path,
    events_path: str | Path,
    assignment_path: str | Path,
    output_dir: str | Path,
    tracking_uri: str | None = None,
    next_spec_dir: str | Path | None = None,
    notebook: str | Path = ANALYZE_NOTEBOOK,
    kernel_name: str | None = "python3",
    force: bool = False,
    lock_timeout: float = 600.0,
    progress: Progress | None = None,
) -> IterationOutcome:
    """Analyse one iteration through the notebook, log it to MLflow, and write the next spec.

    ``next_spec_dir`` defaults to the folder of ``spec_path`` (``experiments/``), where the next
    iteration is picked up; the file is named ``<campaign>-iter<N>.yaml``. With the same spec and
    data as a FINISHED run, that run is reported (``reused``) and nothing is redone unless
    ``force``. Raises :class:`NotebookFailedError` (run FAILED, no decision),
    :class:`NotLoggedError` (analysis kept locally), :class:`ExperimentBusyError`, or an input
    error before any work.
    """
    spec_path = Path(spec_path).resolve()
    spec = load_spec(spec_path)  # fail fast, before a kernel starts, on a bad spec or missing data
    if spec.flow is not None and notebook == ANALYZE_NOTEBOOK:
        notebook = FLOW_NOTEBOOK  # a flow test is judged from entry (loopexp.analysis.flow)
    say(progress, "checking the inputs")
    for warning in check_inputs(spec, events_path, assignment_path):
        say(progress, f"warning: {warning}")
    uri = resolve_tracking_uri(tracking_uri)
    for warning in check_store(uri):  # refused sign-in, old schema: raise before any work
        say(progress, f"warning: {warning}")
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, Any] = {
        "spec_path": str(spec_path),
        "spec_sha256": spec.sha256(),
        "data_fingerprint": data_fingerprint(events_path, assignment_path),
        "events": str(Path(events_path).resolve()),
        "assignment": str(Path(assignment_path).resolve()),
        "next_spec_dir": str(Path(next_spec_dir).resolve() if next_spec_dir else spec_path.parent),
        "tracking_uri": uri,
    }
    with experiment_lock(spec, uri, lock_timeout):
        stale, tracking_down, existing = _look_up(spec, inputs, force, progress)
        if existing is not None:
            say(progress, f"already analysed: run {existing.info.run_id} has this spec and data")
            return _reused(existing, uri, out, tuple(stale))
        attempt, manifest = _start_attempt(out, spec_path, inputs)
        nb_name = Path(str(notebook)).name
        say(progress, f"running the analysis notebook {nb_name} (a kernel starts: ~10-20 s)")
        started = time.monotonic()
        try:
            executed = _execute(notebook, attempt, manifest, kernel_name)
        except NotebookFailedError as exc:
            fail_attempt(spec, exc, attempt, manifest, out, uri, tracking_down, progress)
            raise
        except BaseException as exc:  # e.g. Ctrl-C, or papermill refusing the notebook
            record_failure(out, attempt, manifest, f"{type(exc).__name__}: {exc}")
            raise
        say(progress, f"notebook done in {time.monotonic() - started:.0f} s; writing the report")
        _finish_analysis(spec, executed, attempt, manifest, out)
        if tracking_down is not None:
            raise NotLoggedError(attempt, tracking_down)
        return _log_attempt(attempt, uri, force=True, progress=progress, stale=tuple(stale))


def _look_up(
    spec: ExperimentSpec, inputs: dict[str, Any], force: bool, progress: Progress | None
) -> tuple[list[str], TrackingUnavailableError | None, Any]:
    """Mark stale runs and find a FINISHED run of the same spec and data (unless ``force``).

    Returns (stale run ids, the tracking error if the server is down, the existing run or None).
    """
    uri, sha, data = inputs["tracking_uri"], inputs["spec_sha256"], inputs["data_fingerprint"]
    stale: list[str] = []
    try:
        stale = _mark_stale(spec, uri, progress)
        existing = None if force else find_finished_run(spec.campaign, sha, data, uri)
    except TrackingUnavailableError as exc:
        say(progress, f"warning: {exc}; analysing anyway, the results will be kept locally")
        return stale, exc, None
    return stale, None, existing


def _start_attempt(
    out: Path, spec_path: Path, inputs: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """A fresh attempt folder with the spec and its manifest; the last published files retire."""
    attempt_id = new_attempt_id()
    attempt = out / ATTEMPTS / attempt_id
    attempt.mkdir(parents=True)
    shutil.copyfile(spec_path, attempt / "spec.yaml")
    manifest: dict[str, Any] = {
        "attempt_id": attempt_id,
        "state": "running",
        **inputs,
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(attempt / MANIFEST, manifest)
    unpublish(out, {"state": "running", "attempt_id": attempt_id, "attempt": str(attempt)})
    return attempt, manifest


def _execute(
    notebook: str | Path, attempt: Path, manifest: dict[str, Any], kernel_name: str | None
) -> Path:
    """Run the analysis notebook into the attempt folder (its parameters: the manifest's inputs)."""
    return execute_or_fail(
        notebook,
        attempt / Path(str(notebook)).name,
        parameters={
            "spec_path": manifest["spec_path"],
            "events_path": manifest["events"],
            "assignment_path": manifest["assignment"],
            "results_path": str(attempt / "results.json"),
            "figures_dir": str(attempt / "figures"),
            "quarantine_path": str(attempt / "quarantine.parquet"),
        },
        kernel_name=kernel_name,
        cwd=attempt,
    )


def _finish_analysis(
    spec: ExperimentSpec, executed: Path, attempt: Path, manifest: dict[str, Any], out: Path
) -> None:
    """The report, decision and send-time analysis of a notebook that ran; publish them."""
    render_quietly(executed)
    results = ExperimentResults.read_json(attempt / "results.json")
    write_decision(results, attempt, manifest["attempt_id"], run_id=None, spec=spec)
    analyse_send_time(spec, manifest["events"], manifest["assignment"], attempt)
    analyse_policy(spec, manifest["events"], manifest["assignment"], attempt)  # issue 27
    manifest["state"] = "analysed"
    write_json(attempt / MANIFEST, manifest)
    publish(
        out,
        attempt,
        {
            "state": "analysed",
            "attempt_id": manifest["attempt_id"],
            "attempt": str(attempt),
            "run_id": None,
        },
    )


def upload(
    folder: str | Path,
    tracking_uri: str | None = None,
    force: bool = False,
    lock_timeout: float = 600.0,
    progress: Progress | None = None,
) -> IterationOutcome:
    """Log an analysed attempt kept locally (the tracking server was down) and write its next spec.

    ``folder`` is the attempt folder or the output folder (its latest attempt is used). An attempt
    whose spec and data were logged meanwhile is reported, not logged twice (unless ``force``).
    """
    folder = Path(folder).resolve()
    if not (folder / MANIFEST).exists() and (folder / LATEST).exists():
        folder = Path(read_json(folder / LATEST).get("attempt", folder))
    if not (folder / MANIFEST).exists():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; give an attempt folder of `loopexp run`")
    manifest = read_json(folder / MANIFEST)
    if manifest.get("state") not in {"analysed", "logged"}:
        raise ValueError(
            f"{folder}: this attempt is {manifest.get('state')!r}, not analysed; nothing to upload"
        )
    uri = resolve_tracking_uri(tracking_uri or manifest["tracking_uri"])
    spec = load_spec(folder / "spec.yaml")
    with experiment_lock(spec, uri, lock_timeout):
        stale = _mark_stale(spec, uri, progress)
        return _log_attempt(folder, uri, force=force, progress=progress, stale=tuple(stale))


def _mark_stale(spec: ExperimentSpec, uri: str, progress: Progress | None) -> list[str]:
    stale = mark_stale_runs(spec, uri)
    for run_id in stale:
        say(progress, f"marked the stale RUNNING run {run_id} FAILED (its process was killed)")
    return stale


def _log_attempt(
    attempt: Path,
    uri: str,
    force: bool,
    progress: Progress | None,
    stale: tuple[str, ...] = (),
) -> IterationOutcome:
    """Log an analysed attempt as a FINISHED run, write the next spec, publish; hold the lock."""
    manifest = read_json(attempt / MANIFEST)
    spec = load_spec(attempt / "spec.yaml")
    results = ExperimentResults.read_json(attempt / "results.json")
    out = attempt.parent.parent
    if not force:
        existing = find_finished_run(
            spec.campaign, manifest["spec_sha256"], manifest["data_fingerprint"], uri
        )
        if existing is not None:
            say(progress, f"already logged: run {existing.info.run_id} has this spec and data")
            return _reused(existing, uri, out, stale)
    say(progress, f"logging to MLflow ({redact(uri)})")
    run, next_path, next_note = _log_run(spec, results, attempt, manifest, uri)
    manifest.update(
        state="logged",
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        next_spec=str(next_path) if next_path else None,
    )
    write_json(attempt / MANIFEST, manifest)
    publish(
        out,
        attempt,
        {
            "state": "logged",
            "attempt_id": manifest["attempt_id"],
            "attempt": str(attempt),
            "run_id": run.run_id,
        },
    )
    prune_attempts(out, keep_also=attempt)
    return IterationOutcome(
        results=results,
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        tracking_uri=uri,
        output_dir=out,
        executed_notebook=next(iter(sorted(attempt.glob("*.ipynb"))), attempt / "missing.ipynb"),
        results_path=attempt / "results.json",
        decision_path=attempt / "decision.json",
        report_path=attempt / "report.html",
        next_spec_path=next_path,
        next_spec_note=next_note,
        run_dir=attempt,
        stale_runs=stale,
    )


def _log_run(
    spec: ExperimentSpec,
    results: ExperimentResults,
    attempt: Path,
    manifest: dict[str, Any],
    uri: str,
) -> tuple[LoggedRun, Path | None, str]:
    """The FINISHED MLflow run of an attempt, with its files and the next spec it wrote."""
    tags = {
        **run_identity_tags(
            spec, manifest["spec_sha256"], manifest["data_fingerprint"], manifest["attempt_id"]
        ),
        **decision_tags(results, spec),
        **digest_tags(results, *(_json_or_none(attempt / n) for n in _DIGEST_FILES)),
    }
    try:
        run = start_run(spec, run_name(results), tags, uri)
    except TrackingUnavailableError as exc:
        raise NotLoggedError(attempt, exc) from None
    try:
        write_decision(results, attempt, manifest["attempt_id"], run.run_id, spec=spec)
        names = ["results.json", "decision.json", "report.html", "links.csv", SEND_TIME_ARTIFACT]
        names.append("policy.json")  # issue 27: candidates, next policy, projected vs realised
        artifacts = [
            *sorted(attempt.glob("*.ipynb")),
            *sorted(attempt.glob("*.html")),
            *(attempt / name for name in names),
            attempt / "spec.yaml",
            attempt / "figures",
        ]
        log_contents(run, results, spec, [a for a in artifacts if a.exists()])
        next_path, next_note = write_next_spec(
            spec,
            results,
            run,
            attempt,
            Path(manifest["next_spec_dir"]),
            Path(manifest["spec_path"]).parent,
        )
        end_run(
            run, "FINISHED", {tag.NEXT_SPEC: str(next_path) if next_path else f"none: {next_note}"}
        )
    except TrackingUnavailableError as exc:
        _end_quietly(run)
        raise NotLoggedError(attempt, exc) from None
    except BaseException:
        _end_quietly(run)
        raise
    return run, next_path, next_note


#: The attempt's files an iteration's digest reads besides its results (issue 25).
_DIGEST_FILES = (SEND_TIME_ARTIFACT, "policy.json")


def _json_or_none(path: Path) -> dict[str, Any] | None:
    """A JSON file of the attempt, None when absent."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _end_quietly(run: LoggedRun) -> None:
    """Mark a run FAILED if the server still answers (else the next start marks it stale)."""
    with contextlib.suppress(Exception):
        end_run(run, "FAILED", {tag.FAILURE: "logging did not complete"})


def _reused(existing: Any, uri: str, out: Path, stale: tuple[str, ...]) -> IterationOutcome:
    """The outcome of a FINISHED run of the same spec and data, read back from MLflow."""
    run_id = existing.info.run_id
    tags = existing.data.tags
    local = out
    latest = out / LATEST
    if latest.exists():
        with contextlib.suppress(ValueError, OSError):
            info = read_json(latest)
            if info.get("run_id") == run_id and info.get("attempt"):
                local = Path(info["attempt"])
    results_path = local / "results.json"
    if not results_path.exists():
        folder = out / ATTEMPTS / f"reported-{run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        results_path = download_artifact(run_id, "results.json", uri, folder)
    next_tag = tags.get(tag.NEXT_SPEC, "")
    next_path = None if next_tag.startswith("none") or not next_tag else Path(next_tag)
    return IterationOutcome(
        results=ExperimentResults.read_json(results_path),
        run_id=run_id,
        experiment_id=existing.info.experiment_id,
        tracking_uri=uri,
        output_dir=out,
        executed_notebook=local / ANALYZE_NOTEBOOK,
        results_path=results_path,
        decision_path=local / "decision.json",
        report_path=local / "report.html",
        next_spec_path=next_path,
        next_spec_note=next_tag.removeprefix("none: ") if next_path is None else "",
        run_dir=None,
        reused=True,
        stale_runs=stale,
    )


__all__ = ["IterationOutcome", "NotLoggedError", "run_iteration", "upload"]
