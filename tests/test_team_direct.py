"""The team store used directly: every command on a ``postgresql+psycopg://`` URI, no server.

``demo``, ``runs``, ``report``, ``ui`` and ``upload`` run as the real ``loopexp`` command against
the session's PostgreSQL (tests/_team_servers.py), artifacts in moto's S3 bucket
(``$LOOPEXP_ARTIFACT_ROOT``). ``loopexp ui`` is started on a free port, read over HTTP (its page
and MLflow's REST API) and stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests._team_servers import BUCKET, Team, free_port, healthy, loopexp_cmd, run_loopexp

pytestmark = pytest.mark.integration


def _get(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        return resp.read()


def _ui(uri: str, campaign: str, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """`loopexp ui` on a free port; returns the process and the link it printed."""
    proc = subprocess.Popen(
        loopexp_cmd(
            "ui", "--port", str(free_port()), "--campaign", campaign, "--tracking-uri", uri
        ),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        if line.startswith("MLflow UI: "):
            return proc, line.split()[2]
        assert time.monotonic() < deadline, "loopexp ui printed no link"
    proc.wait()
    raise AssertionError(f"loopexp ui exited ({proc.returncode}) before printing its link")


def _stop(proc: subprocess.Popen, base: str) -> None:
    """SIGTERM to `loopexp ui` (by PID): it stops its server; the port must answer no more."""
    os.kill(proc.pid, signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not healthy(base)


def test_demo_runs_report_ui_and_upload_directly_on_postgresql(team: Team, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = team.pg.create_database("direct_demo")
    env = {**team.env, "LOOPEXP_ARTIFACT_ROOT": f"s3://{BUCKET}/direct-demo"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = tmp_path / "demo"
    demo = run_loopexp("demo", "--iterations", "2", "--recipients", "6000", "--out", str(out),
                "--tracking-uri", uri, env=env, cwd=tmp_path)  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    campaign = experiment.name
    runs = client.search_runs([experiment.experiment_id])
    analysed = [r for r in runs if r.data.tags.get("loopexp.kind") != "report"]
    assert len(analysed) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    keys = team.bucket_keys()
    for run in analysed:
        assert f"direct-demo/{run.info.run_id}/artifacts/results.json" in keys

    listed = run_loopexp(
        "runs", "--campaign", campaign, "--tracking-uri", uri, env=env, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"{campaign} · 3 runs" in listed.stdout
    assert all(r.info.run_id in listed.stdout for r in runs)
    assert f"loopexp ui --tracking-uri {uri}" in listed.stdout

    report = run_loopexp("report", "--campaign", campaign, "--out", str(tmp_path / "r.html"),
                  "--tracking-uri", uri, env=env, cwd=tmp_path)  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    assert "2 iteration(s)" in report.stdout and (tmp_path / "r.html").stat().st_size > 0

    proc, link = _ui(uri, campaign, env, tmp_path)
    base = link.split("/#/")[0]
    try:
        assert f"/#/experiments/{experiment.experiment_id}/runs?" in link
        assert b"<html" in _get(base + "/").lower()
        found = json.loads(
            _get(
                f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment.experiment_id]}
            )
        )
        assert {r["info"]["run_id"] for r in found["runs"]} == {r.info.run_id for r in runs}
        first = min(analysed, key=lambda r: r.info.start_time)
        results = json.loads(  # read from the bucket by the UI's server
            _get(f"{base}/get-artifact?path=results.json&run_uuid={first.info.run_id}")
        )
        assert results["schema_version"] == "1"
    finally:
        _stop(proc, base)

    # upload: an analysed iteration logged into another store (a new database) as it is
    other = team.pg.create_database("direct_upload")
    uploaded = run_loopexp("upload", str(out / "analysis" / "iter1"), "--tracking-uri", other,
                    env=env, cwd=tmp_path)  # fmt: skip
    assert uploaded.returncode in (0, 3), uploaded.stdout + uploaded.stderr
    copy = MlflowClient(tracking_uri=other)
    (moved,) = copy.search_runs([copy.get_experiment_by_name(campaign).experiment_id])
    assert moved.info.status == "FINISHED" and moved.info.run_id != first.info.run_id
    assert moved.data.tags["loopexp.iteration"] == "1"
    assert f"direct-demo/{moved.info.run_id}/artifacts/results.json" in team.bucket_keys()
