"""What an attempt writes for people: decision.json, the HTML report, the link table."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

from loopexp.analysis.results import ExperimentResults
from loopexp.report.opens import opens_html
from loopexp.report.plain import appendix_html, plain_report_html
from loopexp.report.views import incrementality_html, lift_plot, links_html
from loopexp.run.attempts import write_json

if TYPE_CHECKING:
    from loopexp.design.spec import ExperimentSpec


def write_decision(
    results: ExperimentResults,
    attempt: Path,
    attempt_id: str,
    run_id: str | None,
    spec: ExperimentSpec | None = None,
) -> None:
    """decision.json and report.html, each naming the attempt (and the MLflow run once known).

    Also ``links.csv``, the per-link click distribution, when the events carried clicked URLs:
    a marketer opens it in MLflow's artifact view.
    """
    write_json(
        attempt / "decision.json",
        {**results.decision_dict(), "attempt_id": attempt_id, "mlflow_run_id": run_id},
    )
    label = f"attempt {attempt_id}" + (f" · MLflow run {run_id}" if run_id else "")
    write_html_report(results, attempt / "report.html", footer=label, spec=spec)
    if results.links:
        results.links_frame().to_csv(attempt / "links.csv", index=False)


def write_html_report(
    results: ExperimentResults,
    path: str | Path,
    footer: str = "",
    spec: ExperimentSpec | None = None,
) -> Path:
    """A self-contained HTML report in plain words, the lift plot inline.

    Decision, next step and versions (with their subject lines when ``spec`` is given) first;
    the statistical detail in an appendix.
    """
    buffer = io.BytesIO()
    lift_plot(results).savefig(buffer, format="png", dpi=110)
    image = base64.b64encode(buffer.getvalue()).decode()
    body = (
        plain_report_html(results, spec)
        + f'<img alt="lift plot" src="data:image/png;base64,{image}"/>'
        + incrementality_html(results)
        + links_html(results)
        + opens_html(results)  # opens after Apple's MPP, when the spec names a history
        + appendix_html(results)
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


__all__ = ["write_decision", "write_html_report"]
