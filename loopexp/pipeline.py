"""One iteration of the loop, end to end: the path the CLI, the scheduler and the demo all take.

spec → (assignment, events) → notebook (metrics in DuckDB → statistics → decision → results.json)
→ decision.json + HTML report → MLflow run → next iteration's spec.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from loopexp.loop import LoopError, next_spec
from loopexp.metrics.engine import require_source
from loopexp.notebook import ANALYZE_NOTEBOOK, execute
from loopexp.report import lift_plot, results_html
from loopexp.results import ExperimentResults
from loopexp.spec import load_spec, write_spec
from loopexp.tracking import log_artifact, log_run, resolve_tracking_uri, set_tag


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


def run_iteration(
    spec_path: str | Path,
    events_path: str | Path,
    assignment_path: str | Path,
    output_dir: str | Path,
    tracking_uri: str | None = None,
    next_spec_dir: str | Path | None = None,
    notebook: str | Path = ANALYZE_NOTEBOOK,
    kernel_name: str | None = "python3",
) -> IterationOutcome:
    """Analyse one iteration through the notebook, log it to MLflow, and write the next spec.

    ``next_spec_dir`` defaults to the folder of ``spec_path`` (``experiments/``), where the next
    iteration is picked up; the file is named ``<campaign>-iter<N>.yaml``.
    """
    spec_path = Path(spec_path).resolve()
    spec = load_spec(spec_path)  # fail fast, before a kernel starts, on a bad spec or missing data
    require_source(events_path, "events")
    require_source(assignment_path, "assignment")
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    figures_dir = out / "figures"
    executed = execute(
        notebook,
        out / Path(str(notebook)).name,
        parameters={
            "spec_path": str(spec_path),
            "events_path": str(Path(events_path).resolve()),
            "assignment_path": str(Path(assignment_path).resolve()),
            "results_path": str(results_path),
            "figures_dir": str(figures_dir),
            "quarantine_path": str(out / "quarantine.parquet"),
        },
        kernel_name=kernel_name,
        cwd=out,
    )
    results = ExperimentResults.read_json(results_path)
    decision_path = out / "decision.json"
    decision_path.write_text(json.dumps(results.decision_dict(), indent=2), encoding="utf-8")
    report_path = write_html_report(results, out / "report.html")

    uri = resolve_tracking_uri(tracking_uri)
    artifacts = [executed, results_path, decision_path, report_path, spec_path]
    if figures_dir.is_dir():
        artifacts.append(figures_dir)
    run_id, experiment_id = log_run(results, spec, artifacts, tracking_uri=uri)

    # The decision stands even when no next spec can be drafted (e.g. the backlog is empty).
    next_path: Path | None = None
    next_note = ""
    try:
        nxt = next_spec(spec, results, parent_run_id=run_id)
    except LoopError as exc:
        next_note = str(exc)
    else:
        folder = Path(next_spec_dir) if next_spec_dir else spec_path.parent
        next_path = write_spec(nxt, folder / f"{nxt.campaign}-iter{nxt.iteration}.yaml")
        log_artifact(run_id, next_path, tracking_uri=uri, artifact_path="next_spec")
    set_tag(run_id, "loopexp.next_spec", str(next_path) if next_path else f"none: {next_note}", uri)
    return IterationOutcome(
        results=results,
        run_id=run_id,
        experiment_id=experiment_id,
        tracking_uri=uri,
        output_dir=out,
        executed_notebook=executed,
        results_path=results_path,
        decision_path=decision_path,
        report_path=report_path,
        next_spec_path=next_path,
        next_spec_note=next_note,
    )


def write_html_report(results: ExperimentResults, path: str | Path) -> Path:
    """A self-contained HTML report: decision, reasons, comparisons, and the lift plot inline."""
    buffer = io.BytesIO()
    lift_plot(results).savefig(buffer, format="png", dpi=110)
    image = base64.b64encode(buffer.getvalue()).decode()
    body = results_html(results) + f'<img alt="lift plot" src="data:image/png;base64,{image}"/>'
    path = Path(path)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(results.experiment.name)} · iteration "
        f"{results.experiment.iteration}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd}"
        f"</style></head><body>{body}</body></html>",
        encoding="utf-8",
    )
    return path
