"""Scheduled runs and faults, against a real ``mlflow server`` started with ``loopexp ui``.

No mocks: the CLI runs in subprocesses as cron would run it, papermill starts real kernels, the
server is real, a real process is killed with SIGKILL, and a closed port plays the stopped server.
One server serves the whole module; the tests run in file order and share the first run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient

from loopexp import TrueEffects, load_spec, simulate_campaign
from loopexp.run.attempts import ATTEMPTS, LATEST
from loopexp.run.notebook import NotebookFailedError
from loopexp.run.pipeline import run_iteration
from tests._browser import CHROMIUM, debian_chromium
from tests.conftest import DEMO_SPEC, ROOT

pytestmark = pytest.mark.integration

LOOPEXP = str(Path(sys.executable).parent / "loopexp")
CRON = ROOT / "recipes" / "loopexp-cron.sh"
ARTIFACTS = ROOT / "test-artifacts"  # ignored by git: screenshots of the browser test
STATE: dict[str, object] = {}
ML = "?workflowType=machine_learning"  # the runs table, not GenAI traces


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``loopexp ui`` on a fresh SQLite store: a real mlflow server, 1 worker, jobs off."""
    folder = tmp_path_factory.mktemp("ui")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / "ui.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [LOOPEXP, "ui", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--port",
             str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while f"MLflow UI: {url}/#/experiments" not in log_path.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"loopexp ui did not start:\n{log_path.read_text()}")
                time.sleep(0.3)
            assert _healthy(url)
            yield url
        finally:
            proc.terminate()  # `loopexp ui` stops its server's whole process group
            proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while _healthy(url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _healthy(url), "the mlflow server outlived `loopexp ui`"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("project")
    (folder / "experiments").mkdir()
    spec = Path(shutil.copy(DEMO_SPEC, folder / "experiments" / DEMO_SPEC.name))
    sim = simulate_campaign(load_spec(spec), 9_000, TrueEffects(open={"personal": 1.8}), seed=11)
    events, assignment = sim.write(folder / "data")
    return {"folder": folder, "spec": spec, "events": events, "assignment": assignment,
            "next_spec": folder / "experiments" / "spring-newsletter-iter2.yaml"}  # fmt: skip


def _loopexp(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LOOPEXP, *args], check=False, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def _runs(url: str, campaign: str = "spring-newsletter"):
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(campaign)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_stopped_server_fails_fast_keeps_the_analysis_and_upload_logs_it(
    server: str, campaign: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens: a stopped tracking server
    started = time.monotonic()
    result = _loopexp(
        "run", str(campaign["spec"]), "--events", str(campaign["events"]),
        "--assignment", str(campaign["assignment"]), "--out", str(out), "--tracking-uri", dead,
    )  # fmt: skip
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert seconds < 150, f"took {seconds:.0f} s: retries are not bounded"
    assert "Traceback" not in output
    assert "not reachable" in output and "kept in" in output
    command = next(line.strip() for line in output.splitlines() if "loopexp upload" in line)
    attempt = Path(command.split("loopexp upload", 1)[1].strip())
    assert attempt.parent == out / ATTEMPTS
    # The decision is kept locally, and no next spec was written without a run to point to.
    assert json.loads((out / "decision.json").read_text())["mlflow_run_id"] is None
    assert not campaign["next_spec"].exists()

    # The one command of the message (with the server's address) logs it all.
    upload = _loopexp("upload", str(attempt), "--tracking-uri", server)
    assert upload.returncode == 0, upload.stdout + upload.stderr
    (run,) = _runs(server)
    assert run.info.status == "FINISHED"
    assert campaign["next_spec"].exists()
    assert load_spec(campaign["next_spec"]).parent_run_id == run.info.run_id
    assert json.loads((out / "decision.json").read_text())["mlflow_run_id"] == run.info.run_id

    # What a marketer reads without clicking.
    assert run.info.run_name.startswith("#1 SHIP personal +")
    assert run.info.run_name.endswith("%") and len(run.info.run_name) <= 23
    summary = run.data.tags["loopexp.summary"]
    assert "we picked these for your spring" in summary  # the winning subject line, in words
    level = f"{100 * json.loads((out / 'decision.json').read_text())['decision']['ci_level']:.4g}%"
    assert f"{level} CI" in summary and "of 100 plausible worlds" in summary  # the test's level
    assert "100%" not in summary and "chance to beat" not in summary  # how sure, in words
    assert "guardrails ok (unsubscribe_rate)" in summary
    metrics = run.data.metrics
    headline = ["decision.rel_lift", "decision.rel_ci_low", "decision.rel_ci_high",
                "decision.prob_beat_control", "control.click_rate", "best.click_rate"]  # fmt: skip
    assert set(headline) <= set(metrics)
    variants = MlflowClient(server).load_table(
        run.info.experiment_id, "tables/variants.json", run_ids=[run.info.run_id], extra_columns=[]
    )
    personal = variants[variants.variant == "personal"]
    assert metrics["best.click_rate"] == pytest.approx(float(personal.click_rate.iloc[0]))
    client = MlflowClient(server)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    artifacts = _artifact_paths(client, run.info.run_id)
    expected = {
        "report.html",
        "analyze_experiment.ipynb",
        "analyze_experiment.html",
        "results.json",
        "decision.json",
        "tables/comparisons.json",
        "tables/variants.json",
    }
    assert expected <= artifacts
    assert any(a.startswith("next_spec/") for a in artifacts)
    STATE.update(run=run, out=out, attempt=attempt)


def test_rerun_from_cron_with_the_same_data_creates_no_duplicate(
    server: str, campaign: dict[str, Path], tmp_path: Path
) -> None:
    if "run" not in STATE:
        pytest.skip("needs the first run")
    next_spec_text = campaign["next_spec"].read_text()
    next_spec_mtime = campaign["next_spec"].stat().st_mtime_ns
    env = {**os.environ, "LOOPEXP_BIN": LOOPEXP, "LOOPEXP_PROJECT": str(campaign["folder"]),
           "LOOPEXP_TRACKING_URI": server, "LOOPEXP_CRON_LOCK_DIR": str(tmp_path)}  # fmt: skip
    args = [str(CRON), "experiments/subject_line_demo.yaml", str(campaign["events"]),
            str(campaign["assignment"]), "--out", str(STATE["out"])]  # fmt: skip
    result = subprocess.run(args, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Already analysed" in result.stdout
    assert [r.info.run_id for r in _runs(server)] == [STATE["run"].info.run_id]
    assert campaign["next_spec"].read_text() == next_spec_text
    assert campaign["next_spec"].stat().st_mtime_ns == next_spec_mtime

    # While another cron run holds the experiment's flock, the next one is skipped (exit 75).
    lock = tmp_path / "loopexp-cron-subject_line_demo.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        skipped = subprocess.run(
            args, check=False, capture_output=True, text=True, env=env, timeout=60
        )
        assert skipped.returncode == 75, skipped.stdout + skipped.stderr
    finally:
        holder.kill()
        holder.wait()


FAILING_NOTEBOOK = """
import nbformat
nb = nbformat.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
params = nbformat.v4.new_code_cell(
    'spec_path = events_path = assignment_path = results_path = figures_dir = ""\\n'
    'quarantine_path = ""'
)
params.metadata["tags"] = ["parameters"]
nb.cells = [
    params,
    nbformat.v4.new_code_cell('print("computed before the failure")'),
    nbformat.v4.new_code_cell('raise RuntimeError("boom: the data looks odd")'),
    nbformat.v4.new_code_cell('print("never reached")'),
]
"""


def test_failing_cell_marks_the_run_failed_with_the_partial_notebook(
    server: str, campaign: dict[str, Path]
) -> None:
    if "run" not in STATE:
        pytest.skip("needs the first run")
    out = STATE["out"]
    assert (out / "decision.json").exists()  # the last good run's, published
    scope: dict[str, object] = {}
    exec(FAILING_NOTEBOOK, scope)
    notebook = out.parent / "failing.ipynb"
    nbformat.write(scope["nb"], notebook)
    next_spec_text = campaign["next_spec"].read_text()
    with pytest.raises(NotebookFailedError) as failure:
        run_iteration(campaign["spec"], campaign["events"], campaign["assignment"], out,
                      tracking_uri=server, notebook=notebook, force=True)  # fmt: skip
    assert failure.value.ename == "RuntimeError" and "boom" in failure.value.evalue
    run = MlflowClient(server).get_run(failure.value.run_id)
    assert run.info.status == "FAILED"
    assert "boom" in run.data.tags["loopexp.failure"]
    assert "failing.ipynb" in _artifact_paths(MlflowClient(server), run.info.run_id)
    partial = nbformat.read(failure.value.notebook, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in partial.cells])
    assert "computed before the failure" in text and "never reached" not in text
    # No decision: the previous run's files are no longer published as if current.
    assert not (out / "decision.json").exists() and not (out / "report.html").exists()
    assert json.loads((out / LATEST).read_text())["state"] == "failed"
    assert not (failure.value.notebook.parent / "decision.json").exists()
    assert campaign["next_spec"].read_text() == next_spec_text


def test_kill_9_during_logging_is_marked_failed_by_the_next_start(
    server: str, tmp_path: Path
) -> None:
    if "attempt" not in STATE:
        pytest.skip("needs the first run")
    attempt = tmp_path / "out" / ATTEMPTS / STATE["attempt"].name
    shutil.copytree(STATE["attempt"], attempt)
    # A large figure keeps the upload busy long enough to be killed in the middle of it.
    (attempt / "figures" / "large.bin").write_bytes(os.urandom(30 * 2**20))
    client = MlflowClient(server)
    experiment_id = STATE["run"].info.experiment_id
    proc = subprocess.Popen([LOOPEXP, "upload", str(attempt), "--force", "--tracking-uri", server],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
        if running:
            proc.send_signal(signal.SIGKILL)
            killed = running[0].info.run_id
        time.sleep(0.05)
    proc.wait()
    assert killed, "the upload finished before it could be killed"
    assert client.get_run(killed).info.status == "RUNNING"  # what kill -9 leaves behind

    (attempt / "figures" / "large.bin").unlink()
    again = _loopexp("upload", str(attempt), "--force", "--tracking-uri", server)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"marked the stale RUNNING run {killed} FAILED" in again.stdout
    stale = client.get_run(killed)
    assert stale.info.status == "FAILED"
    assert stale.data.tags["loopexp.failure"].startswith("stale")
    assert not client.search_runs([experiment_id], "attributes.status = 'RUNNING'")


def test_concurrent_first_runs_on_a_fresh_sqlite_store(tmp_path: Path) -> None:
    """Three first runs at once on a new store: two experiments, and one of them twice."""
    if "attempt" not in STATE:
        pytest.skip("needs the first run")
    attempts = []
    for name in ("camp-a", "camp-b"):
        attempt = tmp_path / name / ATTEMPTS / "a"
        shutil.copytree(STATE["attempt"], attempt)
        spec = attempt / "spec.yaml"
        spec.write_text(
            spec.read_text().replace("campaign: spring-newsletter", f"campaign: {name}")
        )
        manifest = json.loads((attempt / "run.json").read_text())
        manifest["next_spec_dir"] = str(tmp_path / name)
        (attempt / "run.json").write_text(json.dumps(manifest))
        attempts.append(attempt)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [
        subprocess.Popen([LOOPEXP, "upload", str(a), "--tracking-uri", uri],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for a in (attempts[0], attempts[1], attempts[0])
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    assert "already exists" not in "".join(outputs)
    assert len(_runs(uri, "camp-a")) == len(_runs(uri, "camp-b")) == 1
    # The same experiment twice at once: the lock orders them, the second reports the first's run.
    assert sum("Already analysed" in o for o in outputs) == 1


def test_marketer_sees_the_decision_in_the_mlflow_ui(server: str) -> None:
    if "run" not in STATE:
        pytest.skip("needs the first run")
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    run = STATE["run"]
    experiment = f"{server}/#/experiments/{run.info.experiment_id}"
    ARTIFACTS.mkdir(exist_ok=True)
    with debian_chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{experiment}/runs{ML}", wait_until="domcontentloaded")
        name = page.get_by_text(run.info.run_name).first
        name.wait_for(timeout=60_000)
        # The whole name shows in the default column width (no ellipsis).
        assert name.evaluate("e => e.scrollWidth <= e.clientWidth"), run.info.run_name
        page.screenshot(path=str(ARTIFACTS / "mlflow-campaign-runs.png"))

        page.goto(f"{experiment}/runs/{run.info.run_id}{ML}", wait_until="domcontentloaded")
        page.get_by_text("we picked these for your spring").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-run.png"), full_page=True)

        page.goto(f"{experiment}/runs/{run.info.run_id}/artifacts", wait_until="domcontentloaded")
        page.get_by_text("report.html").first.wait_for(timeout=60_000)
        page.get_by_text("report.html").first.click()
        page.wait_for_timeout(2_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-report.png"), full_page=True)


def test_runs_lists_the_iterations_with_their_decisions(server: str) -> None:
    if "run" not in STATE:
        pytest.skip("needs the first run")
    result = _loopexp("runs", "--campaign", "spring-newsletter", "--tracking-uri", server)
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())
    assert STATE["run"].info.run_name in text and "FINISHED" in text
    assert "FAILED" in text  # the failing cell's run (and the killed one) are listed too
    assert "workflowType=machine_learning" in text
