"""The parallel hashing gives exactly the buckets of a plain one-key-at-a-time reference.

The fast path (Arrow joins ``salt:key`` per chunk; forked workers each hash a range of rows into
shared memory, see loopexp.core.parallel) must never move a recipient: these tests compare it, with
tiny chunks and workers forced on small inputs so that every chunk and worker boundary is crossed,
to the definition written out in full (SHA-256 of "salt:key", top 53 bits).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopexp.assignment.assign import assign_recipients
from loopexp.core import config, parallel

# the root re-exports a function named `assign`: the module itself, from sys.modules
assign_module = sys.modules["loopexp.assignment.assign"]
SALT = "spring-iter-1"


def reference_top53(salt: str, keys: list[str]) -> np.ndarray:
    """The definition, one key at a time, with nothing shared with loopexp's code path."""
    values = [
        int.from_bytes(hashlib.sha256(f"{salt}:{k}".encode()).digest()[:8], "big") >> 11
        for k in keys
    ]
    return np.array(values, dtype=np.uint64)


def awkward_keys(n: int) -> list[str]:
    """Ids, unicode (accents, CJK, emoji, combining marks), empty strings, separators, long keys."""
    shapes = [
        lambda i: f"cust-{i:09d}",
        lambda i: f"Zoë-{i}",
        lambda i: f"顧客{i}",
        lambda i: f"🙂{i}🙂",
        lambda i: "",
        lambda i: f" padded {i} ",
        lambda i: f"a:b:{i}",
        lambda i: f"e\u0301{i}",
        lambda i: "x" * (3000 + i % 7),  # longer than hashlib's 2 KiB GIL threshold
        str,
    ]
    return [shapes[i % len(shapes)](i) for i in range(n)]


@pytest.fixture
def forced_split(monkeypatch):
    """Workers even for a handful of rows, and 7-row chunks: every boundary gets crossed."""
    monkeypatch.setattr(parallel, "MIN_ROWS_PER_WORKER", 1)
    monkeypatch.setattr(assign_module, "_CHUNK", 7)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_fast_path_equals_reference_on_awkward_keys(forced_split, workers):
    keys = awkward_keys(3001)  # not a multiple of the chunk or of any worker count
    expected = reference_top53(SALT, keys)
    got = assign_module._top53(SALT, pa.array(keys, pa.string()), workers=workers)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(list, id="list"),
        pytest.param(lambda k: pa.chunked_array([k[:1000], k[1000:]], pa.string()), id="chunked"),
        pytest.param(lambda k: pd.Series(k, dtype=pd.ArrowDtype(pa.string())), id="arrow-series"),
        pytest.param(lambda k: pd.Series(k, dtype=object), id="object-series"),
    ],
)
def test_every_input_shape_gives_the_same_buckets(forced_split, wrap):
    keys = awkward_keys(2500)
    got = assign_module._top53(SALT, wrap(keys), workers=2)
    np.testing.assert_array_equal(got, reference_top53(SALT, keys))


def test_default_chunk_and_workers_on_a_list_larger_than_one_chunk():
    keys = [f"k{i}" for i in range(assign_module._CHUNK + 123)]
    got = assign_module._top53(SALT, pa.array(keys), workers=2)
    np.testing.assert_array_equal(got, reference_top53(SALT, keys))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.lists(st.text(max_size=40), max_size=60), workers=st.integers(1, 4))
def test_property_fast_path_equals_reference(forced_split, keys, workers):
    got = assign_module._top53(SALT, pa.array(keys, pa.string()), workers=workers)
    np.testing.assert_array_equal(got, reference_top53(SALT, keys))


def test_assign_recipients_is_the_same_with_any_number_of_workers(forced_split, monkeypatch):
    from pathlib import Path

    from loopexp.design.spec import load_spec

    spec = load_spec(
        Path(__file__).resolve().parent.parent / "experiments" / "subject_line_demo.yaml"
    )
    n = 4000
    segments = np.array(["prospect", "new_customer", "existing_customer", "inactive"])
    table = pd.DataFrame(
        {"recipient_key": [f"r{i % 3700}" for i in range(n)], "segment": segments[np.arange(n) % 4]}
    )
    results = {}
    for workers in ("1", "3"):
        monkeypatch.setenv(config.HASH_WORKERS, workers)
        results[workers] = assign_recipients(table, spec)
    one, three = results["1"], results["3"]
    pd.testing.assert_frame_equal(one.assignment, three.assignment)
    pd.testing.assert_frame_equal(one.exclusions, three.exclusions)
    assert one.summary == three.summary
    assert one.summary.excluded["duplicate_key"] == n - 3700
    expected = reference_top53(spec.salt, one.assignment["recipient_key"].tolist()) / 2.0**53
    np.testing.assert_array_equal(one.assignment["bucket"].to_numpy(), expected)


# --- loopexp.core.parallel.fill_rows -------------------------------------------------------------


def squares(lo: int, hi: int, out: np.ndarray) -> None:
    out[:] = np.arange(lo, hi, dtype=np.int64) ** 2


def test_fill_rows_splits_and_joins_in_order():
    got = parallel.fill_rows(10_001, np.int64, squares, workers=3, min_rows_per_worker=1)
    np.testing.assert_array_equal(got, np.arange(10_001, dtype=np.int64) ** 2)
    assert got.flags.writeable and got.base is None  # a private array, not the shared mapping


def test_fill_rows_of_nothing():
    assert parallel.fill_rows(0, np.uint64, squares, workers=4).shape == (0,)


def test_a_failing_worker_costs_time_not_rows(caplog):
    parent = os.getpid()

    def fails_in_children(lo: int, hi: int, out: np.ndarray) -> None:
        if os.getpid() != parent:
            raise RuntimeError("worker trouble")
        time.sleep(0.02)  # leave the children time to take a part each
        squares(lo, hi, out)

    got = parallel.fill_rows(9_000, np.int64, fails_in_children, workers=3, min_rows_per_worker=1)
    np.testing.assert_array_equal(got, np.arange(9_000, dtype=np.int64) ** 2)
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed" in m for m in messages)  # a child that took a part (maybe both)
    assert any("were not filled by a worker" in m for m in messages)


def test_a_stuck_worker_is_killed_and_its_rows_computed_here(monkeypatch, caplog):
    monkeypatch.setattr(parallel, "STUCK_AFTER_SECONDS", 0.5)
    parent = os.getpid()

    def hangs_in_children(lo: int, hi: int, out: np.ndarray) -> None:
        time.sleep(600 if os.getpid() != parent else 0.02)
        squares(lo, hi, out)

    started = time.monotonic()
    got = parallel.fill_rows(4_000, np.int64, hangs_in_children, workers=2, min_rows_per_worker=1)
    assert time.monotonic() - started < 30
    np.testing.assert_array_equal(got, np.arange(4_000, dtype=np.int64) ** 2)
    assert any("is stuck: stopped" in r.getMessage() for r in caplog.records)


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """The pids of the children forked during the test."""
    pids: list[int] = []
    real_fork = os.fork

    def recording_fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    return pids


def assert_all_reaped(pids: list[int]) -> None:
    assert pids, "the test forked no worker"
    for pid in pids:  # other tests' servers may be children of this process too: ask about ours
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_an_error_in_the_parent_stops_the_children(forks):
    parent = os.getpid()

    def fails_in_parent(lo: int, hi: int, out: np.ndarray) -> None:
        if os.getpid() == parent:
            raise ValueError("parent trouble")
        time.sleep(600)

    started = time.monotonic()
    with pytest.raises(ValueError, match="parent trouble"):
        parallel.fill_rows(4_000, np.int64, fails_in_parent, workers=3, min_rows_per_worker=1)
    assert time.monotonic() - started < 30
    assert_all_reaped(forks)


def test_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv(config.HASH_WORKERS, "1")
    assert parallel.available_workers() == 1
    monkeypatch.setenv(config.HASH_WORKERS, "not a number")
    assert parallel.available_workers() >= 1


def test_a_job_runs_while_the_caller_works_and_stops_its_children_on_error(forks):
    with parallel.RowJob(50_000, np.int64, squares, workers=3, min_rows_per_worker=1) as job:
        busy = sum(range(10_000))  # the caller's own work, while the children fill rows
        got = job.result()
    assert busy == 49_995_000
    np.testing.assert_array_equal(got, np.arange(50_000, dtype=np.int64) ** 2)

    parent = os.getpid()

    def slow_in_children(lo: int, hi: int, out: np.ndarray) -> None:
        if os.getpid() != parent:
            time.sleep(600)

    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="caller trouble"),
        parallel.RowJob(4_000, np.int64, slow_in_children, workers=3, min_rows_per_worker=1),
    ):
        raise RuntimeError("caller trouble")
    assert time.monotonic() - started < 30
    assert_all_reaped(forks)


def test_cli_assign_verbose_prints_the_phases_on_stderr(tmp_path):
    import json

    from typer.testing import CliRunner

    from loopexp.cli import app
    from tests.conftest import DEMO_SPEC

    recipients = tmp_path / "list.csv"
    segments = ["prospect", "new_customer", "existing_customer", "inactive"]
    pd.DataFrame(
        {"recipient_key": [f"r{i}" for i in range(400)], "segment": segments * 100}
    ).to_csv(recipients, index=False)
    args = ["assign", str(DEMO_SPEC), "--recipients", str(recipients), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--json", "--verbose"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["assigned"] == 400  # stdout stays JSON
    for phase in ("read", "keys", "prepare", "exclude", "hash", "tables", "write"):
        assert f"{phase} " in result.stderr
    assert "hashing workers" in result.stderr
