"""`loopexp metrics --engine spark` on a real Spark standalone cluster gives DuckDB's numbers.

A master and two workers run as separate JVMs on 127.0.0.1 (``tests/_spark_cluster.py``: ports
bound by the JVMs, stopped by PID); the CLI finds the cluster through ``$LOOPEXP_SPARK_MASTER``
and ``$SPARK_CONF_DIR`` only, as a scheduled job would. The events are a simulated send with
later duplicates plus every corrupt form of ``tests/test_validation_parity.py`` (every column as
text, as exports come), in one file: one Spark application (its start-up and ~50 stages are
most of this module's ~1.5 minutes on two shared cores). Both engines must report the same
assignment counts, quarantine reasons, caps, per-link clicks and sufficient statistics to 1e-9,
and the executors on both workers must have run tasks (the work really went to the cluster).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopexp.design.spec import load_spec
from loopexp.events.validation import DUPLICATE
from loopexp.sim.simulate import simulate_campaign

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # CI installs Java (.ci/run); a laptop without it skips
    pytest.skip("the Spark cluster needs Java 17 on PATH", allow_module_level=True)

from tests._spark_cluster import SparkCluster, spark_cluster
from tests.test_validation_parity import COLUMNS, ROWS, expected_reasons

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "subject_line_demo.yaml"
TOL = 1e-9


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[SparkCluster]:
    with spark_cluster(tmp_path_factory.mktemp("spark-cluster")) as running:
        yield running


def _as_text(events: pd.DataFrame) -> pd.DataFrame:
    """Every column as text: ISO timestamps with microseconds, flags as true/false."""
    out = events.astype("string")
    out["ts"] = events["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").astype("string")
    for flag in ("is_machine_open", "is_bot_click"):
        out[flag] = events[flag].map({True: "true", False: "false"}).astype("string")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    """A simulated send (2 later duplicates) plus the parity fixture's corrupt events."""
    spec = load_spec(SPEC)
    sim = simulate_campaign(spec, 3_000, seed=29)
    events = sim.events
    later = events.iloc[[7, 11]].copy()
    later["ts"] = later["ts"] + pd.Timedelta(hours=1)
    events = _as_text(pd.concat([events, later], ignore_index=True))
    corrupt = pd.DataFrame([r[:-1] for r in ROWS], columns=COLUMNS).astype("string")
    corrupt["provider"] = "esp"
    corrupt["url"] = "https://shop.example/p?utm_source=x"
    events = pd.concat([events, corrupt], ignore_index=True)[events.columns]
    rng = np.random.default_rng(29)
    ours = pd.DataFrame(
        {
            "recipient_key": ["k1", "k2", "k3", "k4"],
            "segment": ["prospect", "prospect", "inactive", "inactive"],
            "variant_id": ["control", "personal", "control", "urgency"],
        }
    )
    assignment = pd.concat([sim.assignment, ours], ignore_index=True)
    assignment = assignment.sample(frac=1.0, random_state=rng.integers(1 << 31))
    folder = tmp_path_factory.mktemp("cluster-data")
    events.to_parquet(folder / "events.parquet", index=False)
    assignment.to_parquet(folder / "assignment.parquet", index=False)
    reasons = expected_reasons()
    reasons[DUPLICATE] += 2
    return folder / "events.parquet", folder / "assignment.parquet", reasons


def _metrics(engine: str, events: Path, assignment: Path, env: dict[str, str] | None) -> dict:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "loopexp.cli", "metrics", str(SPEC)),
            *("--events", str(events), "--assignment", str(assignment)),
            *("--engine", engine, "--json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _assert_close(a: object, b: object, where: str = "") -> None:
    """The same JSON, numbers within TOL (relative, or absolute near zero)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), where
        assert math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_metrics_on_a_standalone_cluster_equal_duckdb(cluster, files):
    events, assignment, reasons = files
    duck = _metrics("duckdb", events, assignment, None)
    on_cluster = _metrics("spark", events, assignment, cluster.driver_env())
    assert (duck["engine"], on_cluster["engine"]) == ("duckdb", "spark")
    assert duck["quarantine_reasons"] == reasons  # every corrupt form counted: not vacuous
    assert duck["unassigned_events"] == 2
    assert (
        duck["caps"] and duck["links"] and len(duck["stats"]) == 6 * 3 * 5
    )  # metrics × variants × segments (+ all)
    _assert_close({**duck, "engine": "-"}, {**on_cluster, "engine": "-"})
    # the work ran on the cluster: each worker launched an executor, and they ran the tasks
    logs = cluster.executor_logs()
    assert all(logs.values()), logs
    finished = [
        p.read_text(errors="replace").count("Finished task") for ps in logs.values() for p in ps
    ]
    assert sum(finished) > 0 and min(finished) > 0, finished
