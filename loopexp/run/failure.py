"""What a failed attempt leaves: a manifest saying so and a FAILED MLflow run with its notebook.

Split from :mod:`loopexp.run.pipeline`, which runs the happy path; a failure must never leave a run
RUNNING nor publish a decision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopexp.core import tags as tag
from loopexp.design.spec import ExperimentSpec
from loopexp.run.attempts import MANIFEST, unpublish, write_json
from loopexp.run.notebook import NotebookFailedError, render_html
from loopexp.track.tracking import (
    TrackingUnavailableError,
    end_run,
    log_files,
    run_identity_tags,
    start_run,
)

Progress = Callable[[str], None]


def say(progress: Progress | None, message: str) -> None:
    """Tell the caller's progress callback, when there is one."""
    if progress:
        progress(message)


def record_failure(out: Path, attempt: Path, manifest: dict[str, Any], error: str) -> None:
    """A failed attempt: its manifest says so, and ``latest.json`` publishes nothing."""
    manifest.update(state="failed", error=error)
    write_json(attempt / MANIFEST, manifest)
    state = {"state": "failed", "attempt_id": manifest["attempt_id"], "attempt": str(attempt)}
    unpublish(out, {**state, "error": error})


def render_quietly(executed: Path) -> Path | None:
    """The notebook's HTML rendering; a rendering problem must not fail the analysis."""
    try:
        return render_html(executed)
    except Exception:
        return None


def fail_attempt(
    spec: ExperimentSpec,
    exc: NotebookFailedError,
    attempt: Path,
    manifest: dict[str, Any],
    out: Path,
    uri: str,
    tracking_down: TrackingUnavailableError | None,
    progress: Progress | None,
) -> None:
    """A failing cell: record it locally and as a FAILED MLflow run with the partial notebook."""
    record_failure(out, attempt, manifest, str(exc))
    if tracking_down is not None:
        return
    html_path = render_quietly(exc.notebook) if exc.notebook.exists() else None
    tags = {
        **run_identity_tags(
            spec, manifest["spec_sha256"], manifest["data_fingerprint"], manifest["attempt_id"]
        ),
        tag.FAILURE: str(exc)[:4000],
        "mlflow.note.content": f"**FAILED**: {exc.ename} in cell {exc.cell}. The partly executed "
        "notebook is attached; no decision was made.",
    }
    try:
        run = start_run(spec, f"#{spec.iteration} FAILED {exc.ename}"[:60], tags, uri)
        try:
            log_files(run, [p for p in (exc.notebook, html_path, attempt / "spec.yaml") if p])
        finally:
            end_run(run, "FAILED")
        exc.run_id = run.run_id
        say(progress, f"MLflow run {run.run_id} marked FAILED with the partial notebook")
    except TrackingUnavailableError as down:
        say(progress, f"warning: could not record the failure in MLflow: {down}")
