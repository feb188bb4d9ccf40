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

import base64
import contextlib
import html
import io
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopexp.analysis.analyze import data_fingerprint
from loopexp.analysis.results import ExperimentResults
from loopexp.core import config
from loopexp.core import tags as tag
from loopexp.core.errors import StateError
from loopexp.core.keys import EMAIL_PATTERN
from loopexp.design.spec import ExperimentSpec, load_spec, write_spec
from loopexp.learn.iteration import LoopError, next_spec
from loopexp.metrics.definitions import HOLDOUT
from loopexp.metrics.engine import EventsError, require_source
from loopexp.report.views import incrementality_html, lift_plot, links_html
from loopexp.run.notebook import ANALYZE_NOTEBOOK, NotebookFailedError, execute_or_fail, render_html
from loopexp.track.describe import run_name
from loopexp.track.tracking import (
    LoggedRun,
    TrackingUnavailableError,
    decision_tags,
    download_artifact,
    end_run,
    file_lock,
    find_finished_run,
    is_remote,
    log_contents,
    log_files,
    mark_stale_runs,
    resolve_tracking_uri,
    run_identity_tags,
    short_hash,
    start_run,
)

Progress = Callable[[str], None]

#: The manifest of an attempt folder (what ``loopexp upload`` reads) and of the output folder.
MANIFEST = "run.json"
LATEST = "latest.json"
ATTEMPTS = "attempts"


class AssignmentMismatchError(EventsError):
    """The assignment was made for another spec or iteration (another salt, other variants)."""


class ExperimentBusyError(StateError):
    """Another process holds the experiment's lock."""


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


def _say(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)


def experiment_lock_name(spec: ExperimentSpec, tracking_uri: str) -> str:
    """The lock file's name of an experiment (campaign and name) in one tracking store."""
    return f"experiment-{short_hash(tracking_uri, spec.campaign, spec.name)}"


@contextlib.contextmanager
def experiment_lock(spec: ExperimentSpec, tracking_uri: str, timeout: float) -> Iterator[None]:
    """Hold the experiment's lock; raise :class:`ExperimentBusyError` after ``timeout`` s."""
    try:
        with file_lock(experiment_lock_name(spec, tracking_uri), timeout=timeout):
            yield
    except TimeoutError as exc:
        raise ExperimentBusyError(
            f"another loopexp run of {spec.campaign}/{spec.name} holds the lock {exc} "
            f"(waited {timeout:g} s); it ends when that run ends"
        ) from None


def _mask(key: Any) -> str:
    text = str(key)
    return EMAIL_PATTERN.sub("<e-mail address>", text)[:24]


def check_inputs(spec: ExperimentSpec, events: str | Path, assignment: str | Path) -> list[str]:
    """Check the inputs in seconds, before a kernel starts; return warnings, raise on errors.

    Errors (:class:`EventsError`, :class:`AssignmentMismatchError`): a missing file or column, an
    assignment made with another salt (another iteration's) or with variants the spec lacks, no
    recipient key shared by the events and the assignment.
    """
    import duckdb  # noqa: PLC0415

    from loopexp.events.schema import REQUIRED_COLUMNS  # noqa: PLC0415
    from loopexp.metrics.engine import _attach  # noqa: PLC0415 (read exactly as the engine does)

    require_source(events, "events")
    require_source(assignment, "assignment")
    warnings: list[str] = []
    con = duckdb.connect()
    try:
        for view, source, what, needed in (
            ("ev", events, "events", REQUIRED_COLUMNS),
            ("asg", assignment, "assignment", ("recipient_key", "segment", "variant_id")),
        ):
            try:
                _attach(con, view, source, what, needed)  # names the file and any missing column
            except duckdb.Error as exc:
                raise EventsError(
                    f"{source}: cannot read the {what} file "
                    f"({str(exc).strip().splitlines()[0][:300]}); expected Parquet or CSV"
                ) from None
        a_columns = [r[0] for r in con.execute("DESCRIBE asg").fetchall()]
        if "salt" in a_columns:
            salts = [r[0] for r in con.execute("SELECT DISTINCT salt FROM asg LIMIT 5").fetchall()]
            if salts != [spec.salt]:
                raise AssignmentMismatchError(
                    f"{assignment}: this assignment was made with salt {salts} but spec "
                    f"{spec.name!r} iteration {spec.iteration} has salt {spec.salt!r}: it belongs "
                    "to another iteration or spec. Analyse it with the spec it was made from, "
                    "or use the assignment written by `loopexp assign` for this spec."
                )
        if "spec_sha256" in a_columns:
            shas = [
                r[0] for r in con.execute("SELECT DISTINCT spec_sha256 FROM asg LIMIT 5").fetchall()
            ]
            if shas != [spec.sha256()]:
                warnings.append(
                    f"{assignment}: made from a spec with fingerprint {shas}, not this spec's "
                    f"({spec.sha256()[:12]}…): the spec was edited after assignment"
                )
        groups = {r[0] for r in con.execute("SELECT DISTINCT variant_id FROM asg").fetchall()}
        unknown = groups - {v.id for v in spec.variants} - {HOLDOUT}
        if unknown:
            raise AssignmentMismatchError(
                f"{assignment}: variants {sorted(map(str, unknown))} are not in spec "
                f"{spec.name!r} (which has {[v.id for v in spec.variants]}): was the assignment "
                "made from another spec?"
            )
        (overlap,) = con.execute(
            "SELECT EXISTS (SELECT 1 FROM ev WHERE recipient_key IN "
            "(SELECT recipient_key FROM asg))"
        ).fetchone()
        if not overlap:
            ev_keys = [r[0] for r in con.execute("SELECT recipient_key FROM ev LIMIT 3").fetchall()]
            a_keys = [r[0] for r in con.execute("SELECT recipient_key FROM asg LIMIT 3").fetchall()]
            raise AssignmentMismatchError(
                f"no event matches the assignment: no recipient_key of {events} is in "
                f"{assignment} (events: {[_mask(k) for k in ev_keys]}…, assignment: "
                f"{[_mask(k) for k in a_keys]}…). Are both from the same send, with keys hashed "
                "with the same key ($LOOPEXP_HASH_KEY)?"
            )
    finally:
        con.close()
    return warnings


#: Attempt folders kept per output folder (a daily cron adds one a day): $LOOPEXP_KEEP_ATTEMPTS.


def prune_attempts(out: Path, keep: int | None = None, keep_also: Path | None = None) -> list[Path]:
    """Remove the oldest finished attempt folders of ``out``, keeping the newest ``keep``.

    Only attempts whose work is done are removed: logged to MLflow (their files are in the run's
    artifacts) or failed. An attempt still running, or analysed but not yet logged (``loopexp
    upload`` needs it), is never touched, nor is ``keep_also`` (the one just published: the
    files in ``out`` are hard links, so they survive its folder either way). Returns the removed.
    """
    if keep is None:
        keep = config.keep_attempts()
    folder = out / ATTEMPTS
    if not folder.is_dir():
        return []
    attempts = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    removed = []
    for path in attempts[: max(len(attempts) - keep, 0)]:
        if keep_also is not None and path.resolve() == keep_also.resolve():
            continue
        try:
            state = _read_json(path / MANIFEST).get("state")
        except (OSError, ValueError):
            continue  # no readable manifest: not ours to judge
        if state in {"logged", "failed"}:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _new_attempt_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _unpublish(out: Path, state: dict[str, Any]) -> None:
    """Remove the previously published files from ``out`` and record ``state`` in latest.json."""
    latest = out / LATEST
    if latest.exists():
        with contextlib.suppress(ValueError, OSError):
            for name in _read_json(latest).get("published", []):
                _remove(out / name)
    _write_json(latest, {**state, "published": []})


def _publish(out: Path, attempt_dir: Path, state: dict[str, Any]) -> None:
    """Copy a complete attempt's files to ``out`` (hard links when possible), replacing the last."""
    _unpublish(out, {**state, "state": "publishing"})
    names = []
    for item in sorted(attempt_dir.iterdir()):
        if item.name.startswith("."):
            continue
        target = out / item.name
        tmp = out / f".{item.name}.{os.getpid()}.tmp"
        _remove(tmp)
        if item.is_dir():
            shutil.copytree(item, tmp, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(item), str(tmp))
        _remove(target)
        os.replace(tmp, target)
        names.append(item.name)
    _write_json(out / LATEST, {**state, "published": names})


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_iteration(  # noqa: PLR0915
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
    _say(progress, "checking the inputs")
    for warning in check_inputs(spec, events_path, assignment_path):
        _say(progress, f"warning: {warning}")
    fingerprint = data_fingerprint(events_path, assignment_path)
    spec_sha = spec.sha256()
    uri = resolve_tracking_uri(tracking_uri)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    next_dir = Path(next_spec_dir).resolve() if next_spec_dir else spec_path.parent

    with experiment_lock(spec, uri, lock_timeout):
        stale: list[str] = []
        tracking_down: TrackingUnavailableError | None = None
        try:
            stale = _mark_stale(spec, uri, progress)
            existing = (
                None if force else find_finished_run(spec.campaign, spec_sha, fingerprint, uri)
            )
        except TrackingUnavailableError as exc:
            tracking_down, existing = exc, None
            _say(progress, f"warning: {exc}; analysing anyway, the results will be kept locally")
        if existing is not None:
            _say(progress, f"already analysed: run {existing.info.run_id} has this spec and data")
            return _reused(existing, uri, out, tuple(stale))

        attempt_id = _new_attempt_id()
        attempt = out / ATTEMPTS / attempt_id
        attempt.mkdir(parents=True)
        shutil.copyfile(spec_path, attempt / "spec.yaml")
        manifest: dict[str, Any] = {
            "attempt_id": attempt_id,
            "state": "running",
            "spec_path": str(spec_path),
            "spec_sha256": spec_sha,
            "data_fingerprint": fingerprint,
            "events": str(Path(events_path).resolve()),
            "assignment": str(Path(assignment_path).resolve()),
            "next_spec_dir": str(next_dir),
            "tracking_uri": uri,
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_json(attempt / MANIFEST, manifest)
        _unpublish(out, {"state": "running", "attempt_id": attempt_id, "attempt": str(attempt)})

        nb_name = Path(str(notebook)).name
        _say(progress, f"running the analysis notebook {nb_name} (a kernel starts: ~10-20 s)")
        started = time.monotonic()
        try:
            executed = execute_or_fail(
                notebook,
                attempt / nb_name,
                parameters={
                    "spec_path": str(spec_path),
                    "events_path": str(Path(events_path).resolve()),
                    "assignment_path": str(Path(assignment_path).resolve()),
                    "results_path": str(attempt / "results.json"),
                    "figures_dir": str(attempt / "figures"),
                    "quarantine_path": str(attempt / "quarantine.parquet"),
                },
                kernel_name=kernel_name,
                cwd=attempt,
            )
        except NotebookFailedError as exc:
            _fail_attempt(spec, exc, attempt, manifest, out, uri, tracking_down, progress)
            raise
        except BaseException as exc:  # e.g. Ctrl-C, or papermill refusing the notebook
            manifest.update(state="failed", error=f"{type(exc).__name__}: {exc}")
            _write_json(attempt / MANIFEST, manifest)
            _unpublish(
                out,
                {
                    "state": "failed",
                    "attempt_id": attempt_id,
                    "attempt": str(attempt),
                    "error": manifest["error"],
                },
            )
            raise
        _say(progress, f"notebook done in {time.monotonic() - started:.0f} s; writing the report")
        _render_quietly(executed)
        results = ExperimentResults.read_json(attempt / "results.json")
        _write_decision(results, attempt, attempt_id, run_id=None)
        manifest["state"] = "analysed"
        _write_json(attempt / MANIFEST, manifest)
        _publish(
            out,
            attempt,
            {
                "state": "analysed",
                "attempt_id": attempt_id,
                "attempt": str(attempt),
                "run_id": None,
            },
        )
        if tracking_down is not None:
            raise NotLoggedError(attempt, tracking_down)
        return _log_attempt(attempt, uri, force=True, progress=progress, stale=tuple(stale))


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
        folder = Path(_read_json(folder / LATEST).get("attempt", folder))
    if not (folder / MANIFEST).exists():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; give an attempt folder of `loopexp run`")
    manifest = _read_json(folder / MANIFEST)
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
        _say(progress, f"marked the stale RUNNING run {run_id} FAILED (its process was killed)")
    return stale


def _render_quietly(executed: Path) -> Path | None:
    """The notebook's HTML rendering; a rendering problem must not fail the analysis."""
    try:
        return render_html(executed)
    except Exception:
        return None


def _fail_attempt(
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
    manifest.update(state="failed", error=str(exc))
    _write_json(attempt / MANIFEST, manifest)
    _unpublish(
        out,
        {
            "state": "failed",
            "attempt_id": manifest["attempt_id"],
            "attempt": str(attempt),
            "error": str(exc),
        },
    )
    if tracking_down is not None:
        return
    html_path = _render_quietly(exc.notebook) if exc.notebook.exists() else None
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
        _say(progress, f"MLflow run {run.run_id} marked FAILED with the partial notebook")
    except TrackingUnavailableError as down:
        _say(progress, f"warning: could not record the failure in MLflow: {down}")


def _write_decision(
    results: ExperimentResults, attempt: Path, attempt_id: str, run_id: str | None
) -> None:
    """decision.json and report.html, each naming the attempt (and the MLflow run once known).

    Also ``links.csv``, the per-link click distribution, when the events carried clicked URLs:
    a marketer opens it in MLflow's artifact view.
    """
    _write_json(
        attempt / "decision.json",
        {**results.decision_dict(), "attempt_id": attempt_id, "mlflow_run_id": run_id},
    )
    label = f"attempt {attempt_id}" + (f" · MLflow run {run_id}" if run_id else "")
    write_html_report(results, attempt / "report.html", footer=label)
    if results.links:
        results.links_frame().to_csv(attempt / "links.csv", index=False)


def _log_attempt(
    attempt: Path,
    uri: str,
    force: bool,
    progress: Progress | None,
    stale: tuple[str, ...] = (),
) -> IterationOutcome:
    """Log an analysed attempt as a FINISHED run, write the next spec, publish; hold the lock."""
    manifest = _read_json(attempt / MANIFEST)
    spec = load_spec(attempt / "spec.yaml")
    results = ExperimentResults.read_json(attempt / "results.json")
    out = attempt.parent.parent
    if not force:
        existing = find_finished_run(
            spec.campaign, manifest["spec_sha256"], manifest["data_fingerprint"], uri
        )
        if existing is not None:
            _say(progress, f"already logged: run {existing.info.run_id} has this spec and data")
            return _reused(existing, uri, out, stale)
    _say(progress, f"logging to MLflow ({uri})")
    tags = {
        **run_identity_tags(
            spec, manifest["spec_sha256"], manifest["data_fingerprint"], manifest["attempt_id"]
        ),
        **decision_tags(results, spec),
    }
    try:
        run = start_run(spec, run_name(results), tags, uri)
    except TrackingUnavailableError as exc:
        raise NotLoggedError(attempt, exc) from None
    try:
        _write_decision(results, attempt, manifest["attempt_id"], run.run_id)
        notebooks = sorted(attempt.glob("*.ipynb")) + sorted(attempt.glob("*.html"))
        artifacts = [
            *notebooks,
            attempt / "results.json",
            attempt / "decision.json",
            attempt / "report.html",
            attempt / "links.csv",
            attempt / "spec.yaml",
            attempt / "figures",
        ]
        log_contents(run, results, spec, [a for a in artifacts if a.exists()])
        next_path, next_note = _write_next_spec(
            spec, results, run, Path(manifest["next_spec_dir"]), Path(manifest["spec_path"]).parent
        )
        end_run(
            run,
            "FINISHED",
            {
                tag.NEXT_SPEC: str(next_path) if next_path else f"none: {next_note}",
            },
        )
    except TrackingUnavailableError as exc:
        _end_quietly(run)
        raise NotLoggedError(attempt, exc) from None
    except BaseException:
        _end_quietly(run)
        raise
    manifest.update(
        state="logged",
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        next_spec=str(next_path) if next_path else None,
    )
    _write_json(attempt / MANIFEST, manifest)
    _publish(
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


def _end_quietly(run: LoggedRun) -> None:
    """Mark a run FAILED if the server still answers (else the next start marks it stale)."""
    with contextlib.suppress(Exception):
        end_run(run, "FAILED", {tag.FAILURE: "logging did not complete"})


def _write_next_spec(
    spec: ExperimentSpec,
    results: ExperimentResults,
    run: LoggedRun,
    folder: Path,
    spec_folder: Path,
) -> tuple[Path | None, str]:
    """The next iteration's spec (attached to the run); the decision stands without one."""
    try:
        nxt = next_spec(spec, results, parent_run_id=run.run_id)
    except LoopError as exc:
        return None, str(exc)
    if nxt.events is not None:  # its export folder, named from where the next spec is written
        nxt = nxt.model_copy(update={"events": nxt.events.rebased(spec_folder, folder)})
    path = write_spec(nxt, folder / f"{nxt.campaign}-iter{nxt.iteration}.yaml")
    log_files(run, [path], artifact_path="next_spec")
    return path, ""


def _reused(existing: Any, uri: str, out: Path, stale: tuple[str, ...]) -> IterationOutcome:
    """The outcome of a FINISHED run of the same spec and data, read back from MLflow."""
    run_id = existing.info.run_id
    tags = existing.data.tags
    local = out
    latest = out / LATEST
    if latest.exists():
        with contextlib.suppress(ValueError, OSError):
            info = _read_json(latest)
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


def write_html_report(results: ExperimentResults, path: str | Path, footer: str = "") -> Path:
    """A self-contained HTML report: decision, reasons, comparisons, and the lift plot inline."""
    buffer = io.BytesIO()
    lift_plot(results).savefig(buffer, format="png", dpi=110)
    image = base64.b64encode(buffer.getvalue()).decode()
    body = (
        results.summary_html()
        + f'<img alt="lift plot" src="data:image/png;base64,{image}"/>'
        + incrementality_html(results)
        + links_html(results)
    )
    if footer:
        body += f"<p style='color:#666;font-size:small'>{html.escape(footer)}</p>"
    path = Path(path)
    title = f"{results.experiment.name} · iteration {results.experiment.iteration}"
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd}"
        f"</style></head><body>{body}</body></html>",
        encoding="utf-8",
    )
    return path


__all__ = [
    "AssignmentMismatchError",
    "ExperimentBusyError",
    "IterationOutcome",
    "NotLoggedError",
    "NotebookFailedError",
    "check_inputs",
    "is_remote",
    "run_iteration",
    "upload",
    "write_html_report",
]
