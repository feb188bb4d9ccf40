"""``loopexp demo --spec <flow example>``: the real pipeline (flow notebook, MLflow, next spec)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.core import tags as tag
from loopexp.design.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_demo_on_the_welcome_flow_decides_its_truth_and_adopts_the_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Notebooks are found in the working folder first: this checkout's, whichever install.
    monkeypatch.chdir(ROOT / "notebooks")
    spec_path = ROOT / "experiments" / "welcome_flow_timing.yaml"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "demo"
    args = ["demo", "--spec", str(spec_path), "--recipients", "30000", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "Expected ship (wait_3d): decided the simulated truth" in result.output

    spec = load_spec(spec_path)
    runs = MlflowClient(uri).search_runs(
        [e.experiment_id for e in MlflowClient(uri).search_experiments()]
    )
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags[tag.FLOW_VERSION] == spec.flow.version()
    assert run.data.tags[tag.FLOW_ID] == "welcome"
    assert run.data.tags[tag.DECISION_WINNER] == "wait_3d"

    nxt = load_spec(out / "welcome-flow-timing-iter2.yaml")
    assert nxt.control == "wait_3d" and nxt.flow.version() != spec.flow.version()
    assert nxt.parent_run_id == run.info.run_id

    (executed,) = (out / "analysis").glob("attempts/*/flow_experiment.ipynb")
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # curves and funnel
    text = "".join(o.get("text", "") for o in outputs)
    assert "Decision: ship: wait_3d" in text
    assert (executed.parent / "figures" / "flow_funnel.csv").exists()

    # the closed-loop report reads the flow's KPI per version back from MLflow
    from loopexp.report.closed_loop import report_html
    from loopexp.track.closed_loop import build_report

    report = build_report(spec.campaign, uri, tmp_path / "report")
    (record,) = report.iterations
    assert record.flow_version == spec.flow.version()
    assert record.kpis["conversion_rate"] is not None
    assert f"1 (flow version {spec.flow.version()})" in report_html(report, plot=False)


@pytest.mark.integration
def test_flow_notebook_runs_without_data_on_a_simulated_flow(tmp_path: Path) -> None:
    """As opened in JupyterLab: no events given, so it simulates the example with its truth."""
    from loopexp.run.notebook import execute

    results = tmp_path / "runs" / "results.json"
    executed = execute(
        ROOT / "notebooks" / "flow_experiment.ipynb",
        tmp_path / "out.ipynb",
        {
            "spec_path": str(ROOT / "experiments" / "welcome_flow_timing.yaml"),
            "results_path": str(results),
            "figures_dir": str(tmp_path / "figures"),
        },
        cwd=tmp_path,
    )
    assert results.is_file() and (tmp_path / "figures" / "conversion_curves.png").is_file()
    nb = nbformat.read(executed, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "wait_3d (challenger): sends welcome-2 on day 3" in text
    assert "Decision:" in text
