"""The cross-host run lock: a PostgreSQL advisory lock, freed when its holder dies (kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from loopexp.core.errors import ConfigError
from loopexp.design.spec import load_spec
from loopexp.run.lock import (
    ExperimentBusyError,
    advisory_key,
    experiment_lock,
    lock_database,
)
from tests._team_servers import Team
from tests.conftest import DEMO_SPEC, ROOT

pytestmark = pytest.mark.integration

HOLDER = """
import sys, time
from loopexp.design.spec import load_spec
from loopexp.run.lock import experiment_lock
with experiment_lock(load_spec(sys.argv[1]), sys.argv[2], timeout=5):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_lock_database_is_named_or_the_stores_own(monkeypatch: pytest.MonkeyPatch) -> None:
    pg = "postgresql+psycopg://u:p@db:5432/mlflow"
    monkeypatch.delenv("LOOPEXP_LOCK_URI", raising=False)
    assert lock_database(pg) == pg
    assert lock_database("http://mlflow:5000") is None  # one host: the lock file
    assert lock_database("sqlite:///mlflow.db") is None
    monkeypatch.setenv("LOOPEXP_LOCK_URI", pg)
    assert lock_database("http://mlflow:5000") == pg
    monkeypatch.setenv("LOOPEXP_LOCK_URI", "sqlite:///x.db")
    with pytest.raises(ConfigError, match="LOOPEXP_LOCK_URI"):
        lock_database("http://mlflow:5000")
    spec = load_spec(DEMO_SPEC)
    assert advisory_key(spec) == advisory_key(load_spec(DEMO_SPEC))
    assert -(2**63) <= advisory_key(spec) < 2**63


def test_a_held_advisory_lock_makes_others_wait_and_dies_with_its_holder(team: Team) -> None:
    uri = team.pg.uri("mlflow")
    spec = load_spec(DEMO_SPEC)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(DEMO_SPEC), uri],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(ExperimentBusyError, match="holds the lock"),
            experiment_lock(spec, uri, timeout=1.5),
        ):
            pass
        os.kill(holder.pid, signal.SIGKILL)  # a crashed host: its connection ends
        holder.wait(timeout=10)
        started = time.monotonic()
        with experiment_lock(spec, uri, timeout=30):
            assert time.monotonic() - started < 10
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
