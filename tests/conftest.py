"""Shared fixtures: the repository's paths, a real MLflow server on 127.0.0.1, Spark local mode."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from loopexp.metrics.engine import MetricTable

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPEC = ROOT / "experiments" / "subject_line_demo.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite store, one worker, no jobs) on 127.0.0.1; yields the URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited early:\n{(folder / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up in 90 s:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The team stack (tests/_team_servers.py): PostgreSQL, moto's S3, `loopexp server start`."""
    from tests._team_servers import start_team, stop_team

    stack = start_team(tmp_path_factory.mktemp("team"), ROOT)
    try:
        yield stack
    finally:
        stop_team(stack)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One Spark local-mode session for every test that compares Spark with DuckDB (one JVM)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("loopexp-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def assert_same_tables(a: MetricTable, b: MetricTable, tol: float = 1e-9) -> None:
    """Two engines' metric tables agree: counts, reasons, and every statistic within ``tol``."""
    assert a.assigned == b.assigned
    assert (a.events, a.quarantined, a.unassigned_events) == (
        b.events,
        b.quarantined,
        b.unassigned_events,
    )
    assert a.quarantine_reasons == b.quarantine_reasons
    assert len(a.stats) == len(b.stats) > 0
    for x, y in zip(a.stats, b.stats, strict=True):
        assert (x.metric, x.variant_id, x.segment, x.n) == (y.metric, y.variant_id, y.segment, y.n)
        for field in ("sum", "sum_sq", "den_sum", "den_sum_sq", "cross_sum"):
            u, v = getattr(x, field), getattr(y, field)
            assert (u is None) == (v is None), field
            if u is not None:
                assert math.isclose(u, v, rel_tol=tol, abs_tol=tol), (x, y, field)
        assert x.covariates.keys() == y.covariates.keys()
        for name, cx in x.covariates.items():
            cy = y.covariates[name]
            for field in ("sum", "sum_sq", "cross"):
                assert math.isclose(getattr(cx, field), getattr(cy, field), rel_tol=tol), field
            assert cx.with_covariates.keys() == cy.with_covariates.keys()
            for other, value in cx.with_covariates.items():
                assert math.isclose(value, cy.with_covariates[other], rel_tol=tol), other
