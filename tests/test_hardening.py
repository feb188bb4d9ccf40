"""Issue #19: broken event and assignment inputs give a right answer or a clear error, never a
silently wrong decision or a raw traceback (the table of cases is in ``tests/hardening_cases.py``;
its before/after outcomes in ``tests/HARDENING.md``)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from loopexp.metrics import EventsError, compute_metrics
from tests import hardening_cases as hc

# Names new in #19 are imported inside the tests that use them, so that this module also runs on
# the code before the fix (bench/hardening_table.py and the before/after check of HARDENING.md).


def stats(table) -> dict:
    return {(s.metric, s.variant_id, s.segment): (s.n, s.sum, s.sum_sq) for s in table.stats}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The clean campaign's statistics and decision, the reference of every ``same`` case."""
    tmp = tmp_path_factory.mktemp("clean")
    case = hc.Case("clean", "clean", hc.write, "same")
    return hc.run(case, tmp)


def test_the_table_has_at_least_30_distinct_cases():
    assert len(hc.CASES) >= 30
    assert len({c.id for c in hc.CASES}) == len(hc.CASES)


@pytest.mark.parametrize("case", hc.CASES, ids=[c.id for c in hc.CASES])
def test_broken_input(case: hc.Case, tmp_path: Path, clean):
    if case.expect == "error":
        with pytest.raises(EventsError) as info:
            hc.run(case, tmp_path)
        message = str(info.value)
        assert re.search(case.message, message), message
        assert "Traceback" not in message
        assert hc.ADDRESS not in message
        return
    table, results = hc.run(case, tmp_path)
    clean_table, clean_results = clean
    # Nothing lost: every event is either used or quarantined, and the counts say so.
    assert table.events == clean_table.events
    assert table.quarantine_reasons == case.reasons
    assert table.quarantined == sum(case.reasons.values())
    if case.expect == "same":
        assert stats(table) == stats(clean_table)
        assert results.decision == clean_results.decision
    else:
        quarantine = pd.read_parquet(tmp_path / "quarantine.parquet")
        assert quarantine["quarantine_reason"].value_counts().to_dict() == case.reasons
    for s in table.stats:
        assert math.isfinite(s.sum) and math.isfinite(s.sum_sq), s
    if case.check:
        case.check(tmp_path)


# --- targeted checks beyond the table -----------------------------------------------------------


def test_epoch_units_and_formats_parse_to_the_same_instant():
    t0 = pd.Timestamp("2026-03-02 09:00:00.250", tz="UTC")
    forms = {
        "s": t0.value // 10**9,
        "ms": t0.value // 10**6,
        "us": t0.value // 10**3,
        "ns": t0.value,
        "s-float": t0.value / 1e9,
        "iso-z": "2026-03-02T09:00:00.250Z",
        "iso-offset": "2026-03-02T10:00:00.250+01:00",
        "iso-naive": "2026-03-02 09:00:00.250",
        "rfc2822": "Mon, 02 Mar 2026 09:00:00 +0000",
        "ms-text": str(t0.value // 10**6),
    }
    rows = []
    for i, (name, value) in enumerate(forms.items()):
        rows.append({"event_id": name, "provider": "p", "event_type": "delivered",
                     "ts": str(value), "recipient_key": f"k{i}"})  # fmt: skip
    df = pd.DataFrame(rows)
    asg = pd.DataFrame({"recipient_key": df.recipient_key, "segment": "prospect",
                        "variant_id": "a"})  # fmt: skip
    q = compute_metrics(df, asg, ["delivery_rate"])
    assert q.quarantined == 0
    con = duckdb.connect()
    from loopexp.events.validation import DUCKDB, parse_ts

    con.execute("SET TimeZone = 'UTC'")
    con.register("src", df)
    parsed = dict(con.execute(f"SELECT event_id, {parse_ts(DUCKDB, 'string')} FROM src").fetchall())
    whole_seconds = {"s", "rfc2822"}
    for name, value in parsed.items():
        expected = t0.floor("s") if name in whole_seconds else t0
        assert pd.Timestamp(value) == expected, name


def test_unparseable_flag_keeps_raw_value_and_is_not_counted_as_human(tmp_path):
    ev = pd.DataFrame(
        {
            "event_id": ["d1", "o1", "d2", "o2"],
            "provider": "p",
            "event_type": ["delivered", "open", "delivered", "open"],
            "ts": pd.Timestamp("2026-03-02", tz="UTC"),
            "recipient_key": ["k1", "k1", "k2", "k2"],
            "is_machine_open": [None, "MPP", None, "false"],
        }
    )
    asg = pd.DataFrame({"recipient_key": ["k1", "k2"], "segment": "prospect",
                        "variant_id": ["a", "b"]})  # fmt: skip
    q = tmp_path / "q.parquet"
    t = compute_metrics(ev, asg, ["open_rate"], q)
    assert t.quarantine_reasons == {"unparseable is_machine_open": 1}
    assert t.get("open_rate", "a").sum == 0.0  # the 'MPP' open is not a human open
    assert t.get("open_rate", "b").sum == 1.0
    row = pd.read_parquet(q).iloc[0]
    assert row["raw_is_machine_open"] == "MPP"
    assert row["event_id"] == "o1"


def test_quarantine_threshold_is_the_specs_and_the_file_is_written_first(tmp_path):
    from loopexp.metrics.engine import QuarantineError

    ev, asg = hc._mutate("ts", "n/a", lambda df: df.index[: int(len(df) * 0.6)])(tmp_path)
    spec = hc.spec()
    lenient = spec.model_copy(update={"data": spec.data.model_copy(
        update={"max_quarantine_share": 0.7})})  # fmt: skip
    from loopexp.analysis.analyze import analyze_files

    table, _ = analyze_files(lenient, ev, asg, tmp_path / "q.parquet")
    assert table.quarantined == int(table.events * 0.6) or table.quarantined > 0
    with pytest.raises(QuarantineError, match="60%") as info:
        analyze_files(spec, ev, asg, tmp_path / "q2.parquet")
    assert str(tmp_path / "q2.parquet") in str(info.value)
    assert "ISO 8601" in str(info.value)  # the hint for this reason
    assert len(pd.read_parquet(tmp_path / "q2.parquet")) == table.quarantined


def test_no_match_shows_hashed_samples_of_both_sides(tmp_path):
    ev, asg = hc._assignment(hc._other_keys)(tmp_path)
    with pytest.raises(EventsError) as info:
        compute_metrics(ev, asg, ["click_rate"], require_match=True)
    message = str(info.value)
    assert "keys in the events look like sha256:" in message.lower()
    assert "shape 'aaa-9999-99999999'" in message  # events: rcp-0005-…
    assert "shape 'aaaaa-aaa-9999-99999999'" in message  # assignment: other-rcp-0005-…
    assert "rcp-0005" not in message


def test_hex_keys_are_shown_shortened_not_hashed():
    from loopexp.metrics.checks import show_key

    assert show_key("0123456789abcdef0123456789abcdef") == "0123456789ab…"
    shown = show_key(hc.ADDRESS)
    assert "@" not in shown and "jane" not in shown


def test_engine_default_checks_stay_off_for_direct_callers():
    from loopexp.metrics.engine import QuarantineError

    # compute_metrics alone is a statistics function: the spec's run checks are opt-in.
    ev = pd.DataFrame({"event_id": ["e1"], "provider": "p", "event_type": ["bogus"],
                       "ts": ["2026-03-02"], "recipient_key": ["zz"]})  # fmt: skip
    asg = pd.DataFrame({"recipient_key": ["k"], "segment": "prospect", "variant_id": "a"})
    t = compute_metrics(ev, asg, ["click_rate"])
    assert t.quarantined == 1 and t.matched_recipients == 0
    with pytest.raises(QuarantineError):
        compute_metrics(ev, asg, ["click_rate"], max_quarantine_share=0.5)


# --- resources ----------------------------------------------------------------------------------


def test_resources_come_from_argument_then_environment_then_default(monkeypatch, tmp_path):
    from loopexp.core.config import (
        DUCKDB_MEMORY_LIMIT as MEMORY_LIMIT_ENV,
    )
    from loopexp.core.config import (
        DUCKDB_TEMP_DIR as TEMP_DIR_ENV,
    )
    from loopexp.core.config import (
        default_memory_limit,
        duckdb_resources,
    )

    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    monkeypatch.delenv(TEMP_DIR_ENV, raising=False)
    limit, spill = duckdb_resources()
    assert limit == default_memory_limit() and spill is None
    assert re.fullmatch(r"\d+MiB", limit)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "300MB")
    monkeypatch.setenv(TEMP_DIR_ENV, str(tmp_path))
    assert duckdb_resources() == ("300MB", str(tmp_path))
    assert duckdb_resources("1GB", tmp_path / "x") == ("1GB", str(tmp_path / "x"))


def test_default_memory_limit_respects_an_address_space_limit():
    import os
    import subprocess
    import sys

    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30));"
        "from loopexp.core.config import default_memory_limit; print(default_memory_limit())"
    )
    # many threads: the per-thread budget alone would allow far more than the rlimit rule
    env = {**os.environ, "LOOPEXP_DUCKDB_THREADS": "64"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert int(out.stdout.strip().removesuffix("MiB")) <= 4 * 1024


def test_default_memory_limit_is_a_budget_per_thread_not_half_the_machine(monkeypatch):
    """Bounded memory by default (issue 29): on a big machine DuckDB gets a budget per thread
    (and spills past it), not half of the RAM."""
    from loopexp.core.config import DEFAULT_MEMORY_PER_THREAD, default_memory_limit

    for threads in (1, 2, 3):
        monkeypatch.setenv("LOOPEXP_DUCKDB_THREADS", str(threads))
        limit = int(default_memory_limit().removesuffix("MiB")) * 2**20
        assert limit <= DEFAULT_MEMORY_PER_THREAD * threads
        assert limit > DEFAULT_MEMORY_PER_THREAD * (threads - 1)  # grows with the threads


def test_bad_memory_limit_is_a_clear_error():
    with pytest.raises(EventsError, match="not a size DuckDB understands"):
        compute_metrics(*_big(10), ["click_rate"], memory_limit="lots")


def _big(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` recipients with a send, a delivery and a click each: long keys and ids."""
    keys = pd.Series([f"{i:032x}" for i in range(n)])
    parts = []
    for kind in ("send", "delivered", "click"):
        parts.append(pd.DataFrame({"event_id": kind + "-" + keys, "provider": "esp",
                                   "event_type": kind, "recipient_key": keys}))  # fmt: skip
    ev = pd.concat(parts, ignore_index=True)
    ev["ts"] = pd.Timestamp("2026-03-02", tz="UTC")
    asg = pd.DataFrame({"recipient_key": keys, "segment": "prospect",
                        "variant_id": ["a", "b"] * (n // 2)})  # fmt: skip
    return ev, asg


def test_a_job_larger_than_the_memory_limit_spills_and_finishes(tmp_path):
    # In a fresh interpreter: DuckDB state left by earlier tests in this process (allocator,
    # caches) changed whether the first call ran out of memory, which made the test order-dependent.
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from pathlib import Path
import pytest
from loopexp.metrics import EventsError, compute_metrics
from loopexp.core.config import DUCKDB_THREADS as THREADS_ENV
from tests.test_hardening import _big

os.environ[THREADS_ENV] = "2"  # memory per thread: the same job on any machine
tmp = Path({str(tmp_path)!r})
ev, asg = _big(600_000)
ev.to_parquet(tmp / "events.parquet", index=False)
asg.to_parquet(tmp / "assignment.parquet", index=False)
del ev, asg
# Without a spill folder the job does not fit in 80 MB: proof the limit binds. (150 MB until the
# assignment checks became one aggregate of 8-byte key hashes: the job then fit without spilling.)
with pytest.raises(EventsError, match="ran out of memory"):
    compute_metrics(tmp / "events.parquet", tmp / "assignment.parquet", ["click_rate"],
                    memory_limit="80MB", temp_directory="")
t = compute_metrics(tmp / "events.parquet", tmp / "assignment.parquet", ["click_rate"],
                    memory_limit="80MB", temp_directory=tmp / "spill")
assert t.get("click_rate", "a").n == 300_000
assert t.get("click_rate", "a").sum == 300_000
assert t.events == 1_800_000
print("spilled and finished")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "spilled and finished" in done.stdout


def test_pipeline_refuses_an_unreadable_file_before_starting_a_kernel(tmp_path):
    from loopexp.run.pipeline import run_iteration

    events, assignment = hc.write(tmp_path)
    events.write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(EventsError, match=r"events\.parquet: the file is empty \(0 bytes\)"):
        run_iteration(hc.DEMO_SPEC, events, assignment, out)
    assert not out.exists()  # refused before a notebook kernel started
