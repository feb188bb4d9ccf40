"""The team profile for real: MLflow on PostgreSQL with S3 artifacts (moto) and basic-auth sign-in.

Every test runs the real `loopexp` command (a subprocess, as cron and people do) against the
session's team stack (tests/_team_servers.py, fixture ``team`` in conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests._team_servers import BUCKET, Team, loopexp_cmd, run_loopexp
from tests.conftest import DEMO_SPEC

pytestmark = pytest.mark.integration


def _spec(folder: Path, campaign: str) -> Path:
    """The demo spec as campaign ``campaign`` in ``folder`` (next specs are written beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = DEMO_SPEC.read_text().replace("campaign: spring-newsletter ", f"campaign: {campaign} ")
    assert f"campaign: {campaign} " in text
    path = folder / DEMO_SPEC.name
    path.write_text(text)
    return path


def _simulate(spec: Path, out: Path, env: dict[str, str]) -> tuple[Path, Path]:
    done = run_loopexp(
        "simulate",
        str(spec),
        "--out",
        str(out),
        "--recipients",
        "6000",
        "--seed",
        "5",
        "--open-lift",
        "personal=1.8",
        env=env,
        cwd=out.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "events.parquet", out / "assignment.parquet"


def _run_args(spec: Path, data: tuple[Path, Path], out: Path, uri: str) -> list[str]:
    return [
        "run",
        str(spec),
        "--events",
        str(data[0]),
        "--assignment",
        str(data[1]),
        "--out",
        str(out),
        "--tracking-uri",
        uri,
    ]


def _client(team: Team, role: str = "analyst", uri: str | None = None):
    """An MlflowClient signed in as ``role`` (MLflow reads the two variables per request)."""
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = role
    os.environ["MLFLOW_TRACKING_PASSWORD"] = team.server.password(role)
    return MlflowClient(tracking_uri=uri or team.server.url)


@pytest.fixture(autouse=True)
def _no_leaked_credentials():
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _runs(client, campaign: str) -> list:
    experiment = client.get_experiment_by_name(campaign)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_demo_loop_on_the_team_server_keeps_artifacts_in_the_bucket(
    team: Team, tmp_path: Path
) -> None:
    env = team.client_env("analyst")
    done = run_loopexp(
        "demo",
        "--iterations",
        "2",
        "--recipients",
        "6000",
        "--out",
        str(tmp_path / "demo"),
        "--tracking-uri",
        team.server.url,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = _client(team)
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiments, "the demo logged no experiment"
    campaign = experiments[0].name
    runs = _runs(client, campaign)
    analysed = [r for r in runs if r.data.tags.get("loopexp.kind") != "report"]
    assert len(analysed) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    keys = team.bucket_keys()
    for run in analysed:  # proxied through the server into the bucket: the clients hold no keys
        assert any(k.endswith(f"{run.info.run_id}/artifacts/results.json") for k in keys), keys[:20]
    # issue 25: runs and the report answer from one search (the runs' digest tags), not from
    # per-iteration files: with every iteration's JSON gone from the bucket they still answer
    s3 = team.moto.s3()
    for key in keys:
        if key.endswith(".json") and "/report/" not in key:
            s3.delete_object(Bucket=BUCKET, Key=key)
    assert not any(k.endswith("results.json") for k in team.bucket_keys())
    # runs and the closed-loop report read it back through the server
    listed = run_loopexp(
        "runs", "--campaign", campaign, "--tracking-uri", team.server.url, env=env, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    assert all(r.info.run_id in listed.stdout for r in analysed)
    newest = max(runs, key=lambda r: r.info.start_time)
    last = run_loopexp(
        "runs",
        "--campaign",
        campaign,
        "--last",
        "1",
        "--tracking-uri",
        team.server.url,
        env=env,
        cwd=tmp_path,
    )
    assert last.returncode == 0 and "the latest 1 run (" in last.stdout, last.stdout + last.stderr
    assert newest.info.run_id in last.stdout
    assert sum(r.info.run_id in last.stdout for r in runs) == 1
    report = run_loopexp(
        "report",
        "--campaign",
        campaign,
        "--out",
        str(tmp_path / "report.html"),
        "--tracking-uri",
        team.server.url,
        env=env,
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "2 iteration(s)" in report.stdout and (tmp_path / "report.html").exists()


def test_the_marketer_reads_runs_and_is_refused_a_write(team: Team, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    analyst = _client(team, "analyst")
    experiment_id = analyst.create_experiment("team-permissions")
    run = analyst.create_run(experiment_id, run_name="by the analyst")
    analyst.set_terminated(run.info.run_id)
    marketer = _client(team, "marketer")
    assert marketer.get_run(run.info.run_id).info.status == "FINISHED"
    assert [r.info.run_id for r in marketer.search_runs([experiment_id])] == [run.info.run_id]
    with pytest.raises(MlflowException) as refused:
        marketer.set_tag(run.info.run_id, "edited", "by the marketer")
    assert "403" in str(refused.value) or refused.value.error_code == "PERMISSION_DENIED"
    with pytest.raises(MlflowException):
        marketer.create_run(experiment_id)
    # issue 25: `loopexp runs` reads through the REST API (no MLflow client), signed in alike
    env = team.client_env("marketer")
    listed = run_loopexp("runs", "--campaign", "team-permissions", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and run.info.run_id in listed.stdout, listed.stderr
    refused_env = {**env, "MLFLOW_TRACKING_PASSWORD": "wrong"}
    denied = run_loopexp("runs", "--campaign", "team-permissions", env=refused_env, cwd=tmp_path)
    assert denied.returncode != 0 and "refused the sign-in (user 'marketer')" in denied.stderr
    assert "Traceback" not in denied.stderr and "wrong" not in denied.stderr + denied.stdout
    # the admin's password is the generated one: MLflow's old default is refused
    import requests

    url = f"{team.server.url}/api/2.0/mlflow/users/get"
    assert (
        requests.get(url, params={"username": "admin"}, auth=("admin", "password1234")).status_code
        == 401
    )
    ok = requests.get(
        url, params={"username": "marketer"}, auth=("admin", team.server.password("admin"))
    )
    assert ok.status_code == 200 and ok.json()["user"]["is_admin"] is False


def test_run_directly_on_postgresql_reuses_and_repairs(team: Team, tmp_path: Path) -> None:
    uri = team.pg.create_database("direct")
    env = {**team.env, "LOOPEXP_ARTIFACT_ROOT": f"s3://{BUCKET}/direct"}
    spec = _spec(tmp_path / "experiments", "direct-campaign")
    data = _simulate(spec, tmp_path / "data", env)
    first = run_loopexp(*_run_args(spec, data, tmp_path / "out", uri), env=env, cwd=tmp_path)
    assert first.returncode in (0, 3), first.stdout[-3000:] + first.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = _runs(client, "direct-campaign")
    assert run.info.status == "FINISHED"
    assert any(k.startswith("direct/") and k.endswith("results.json") for k in team.bucket_keys())
    # a RUNNING run left by a killed process on this host: repaired by the next run, which
    # finds the FINISHED run of the same spec and data (idempotent) instead of analysing again
    dead = subprocess.Popen(["true"])
    dead.wait()
    experiment_id = run.info.experiment_id
    stale = client.create_run(
        experiment_id,
        tags={
            "loopexp.experiment": "spring-newsletter-subject",
            "loopexp.iteration": "1",
            "loopexp.host": os.uname().nodename,
            "loopexp.pid": str(dead.pid),
        },
    )
    again = run_loopexp(*_run_args(spec, data, tmp_path / "out", uri), env=env, cwd=tmp_path)
    assert again.returncode in (0, 3), again.stdout[-3000:] + again.stderr[-3000:]
    assert "already analysed" in again.stdout
    assert client.get_run(stale.info.run_id).info.status == "FAILED"
    assert [r.info.status for r in _runs(client, "direct-campaign")].count("FINISHED") == 1


def test_two_hosts_at_once_on_one_server_make_one_run(team: Team, tmp_path: Path) -> None:
    spec = _spec(tmp_path / "experiments", "two-hosts")
    data = _simulate(spec, tmp_path / "data", team.env)
    procs = []
    for host in ("a", "b"):
        env = {
            **team.client_env("analyst"),
            "LOOPEXP_LOCK_DIR": str(tmp_path / f"locks-{host}"),
            "LOOPEXP_LOCK_URI": team.pg.uri("mlflow"),
        }
        procs.append(
            subprocess.Popen(
                loopexp_cmd(*_run_args(spec, data, tmp_path / f"out-{host}", team.server.url)),
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode in (0, 3) for p in procs), outputs
    assert sum("already analysed" in out for out in outputs) == 1, outputs
    runs = _runs(_client(team), "two-hosts")
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_server_killed_mid_run_then_upload_logs_it(team: Team, tmp_path: Path) -> None:
    spec = _spec(tmp_path / "experiments", "server-killed")
    data = _simulate(spec, tmp_path / "data", team.env)
    env = team.client_env("analyst")
    proc = subprocess.Popen(
        loopexp_cmd(*_run_args(spec, data, tmp_path / "out", team.server.url)),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "running the analysis notebook" in line:
            team.server.kill()  # the whole server, mid-run, while the notebook works
            break
    rest, _ = proc.communicate(timeout=600)
    output = "".join(lines) + rest
    try:
        assert proc.returncode == 1, output
        assert "loopexp upload" in output and "not reachable" in output
    finally:
        team.server.start()
    client = _client(team)
    assert _runs(client, "server-killed") == []  # nothing half-logged
    uploaded = run_loopexp("upload", str(tmp_path / "out"), env=env, cwd=tmp_path)
    assert uploaded.returncode in (0, 3), uploaded.stdout + uploaded.stderr
    runs = _runs(client, "server-killed")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert "results.json" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}


def test_postgresql_restart_is_retried_then_a_clear_error(team: Team) -> None:
    from loopexp.track.tracking import TrackingUnavailableError, list_runs

    uri = team.pg.uri("mlflow")
    assert list_runs("no-such-campaign", uri) == []
    port = team.pg.port
    team.pg.stop()
    restart = threading.Timer(2.0, team.pg.start, kwargs={"port": port})
    restart.start()
    started = time.monotonic()
    assert list_runs("no-such-campaign", uri) == []  # retried until PostgreSQL was back
    restart.join()
    assert time.monotonic() - started < 20
    team.pg.stop()
    try:
        started = time.monotonic()
        with pytest.raises(TrackingUnavailableError) as down:
            list_runs("no-such-campaign", uri)
        assert 10 < time.monotonic() - started < 40  # bounded
        assert "database postgresql+psycopg://postgres@127.0.0.1" in str(down.value)
        assert "not reachable" in str(down.value)
    finally:
        team.pg.start(port=port)


def test_server_init_again_keeps_the_passwords_private(team: Team, tmp_path: Path) -> None:
    config = team.server.config_dir / "team.json"
    before = config.read_text()
    assert config.stat().st_mode & 0o777 == 0o600
    assert (team.server.config_dir / "basic_auth.ini").stat().st_mode & 0o777 == 0o600
    again = run_loopexp(
        "server",
        "init",
        "--config-dir",
        str(team.server.config_dir),
        "--backend-store-uri",
        team.pg.uri("mlflow"),
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow",
        "--port",
        str(team.server.config["port"]),
        "--workers",
        "1",
        env=team.env,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert config.read_text() == before  # same passwords: the team's accounts keep working
    assert config.stat().st_mode & 0o777 == 0o600
    refused = run_loopexp(
        "server",
        "init",
        "--config-dir",
        str(tmp_path / "x"),
        "--backend-store-uri",
        "http://127.0.0.1:1",
        "--artifacts-destination",
        "s3://b",
        env=team.env,
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "is not a database" in refused.stdout + refused.stderr
