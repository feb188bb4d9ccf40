"""Faults under a real uvicorn: kill -9 mid-burst and a full disk lose nothing acknowledged.

The load generator keeps the list of event ids each answer acknowledged (200) or refused; ingest
of the raw log afterwards must hold every acknowledged id exactly once and no refused one.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest

from loopexp.collect.segments import seal_file
from loopexp.core.keys import HashKey
from loopexp.events import rawlog
from loopexp.events.ingest import ingest
from tests import _collect_signing as sig
from tests._collect_servers import running, start

KEY = HashKey(b"test-secret-for-collect", "test")


class Load:
    """Signed SendGrid batches from several threads; what was acknowledged, refused, unknown."""

    def __init__(self, url: str, private, batch: int = 20) -> None:
        self.url, self.private, self.batch = url, private, batch
        self.acked: list[str] = []
        self.refused: list[str] = []
        self.unknown: list[str] = []  # no answer (the server died): may or may not be stored
        self.statuses: dict[int, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def post(self, conn: http.client.HTTPConnection) -> int | None:
        events = [sig.sendgrid_event(i) for i in range(self.batch)]
        ids = [e["sg_event_id"] for e in events]
        body = sig.sendgrid_body(events)
        try:
            conn.request("POST", "/webhooks/sendgrid", body, sig.sign_sendgrid(self.private, body))
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            with self.lock:
                self.unknown += ids
            return None
        with self.lock:
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            (self.acked if response.status == 200 else self.refused).extend(ids)
        return response.status

    def worker(self, limit: int | None = None) -> None:
        host = urlsplit(self.url)
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        n = 0
        while not self.stop.is_set() and (limit is None or n < limit):
            n += 1
            if self.post(conn) is None:
                return
        conn.close()

    def run(self, threads: int, limit: int | None = None) -> list[threading.Thread]:
        workers = [threading.Thread(target=self.worker, args=(limit,)) for _ in range(threads)]
        for w in workers:
            w.start()
        return workers


def _env(out: Path, public_key: str) -> dict[str, str]:
    return {
        "LOOPEXP_COLLECT_OUT": str(out),
        "LOOPEXP_SENDGRID_VERIFICATION_KEY": public_key,
        "LOOPEXP_COLLECT_INSTANCE": "fault-test",
    }


def _ingested_ids(raw: Path, out: Path) -> list[str]:
    summary = ingest(raw, out, key=KEY)
    assert summary.input_records == summary.events + summary.duplicates + summary.quarantined
    assert summary.quarantined == 0, summary.quarantine_reasons
    return pq.read_table(summary.events_path).column("event_id").to_pylist()


def test_kill_9_mid_burst_then_restart_loses_no_acknowledged_event(tmp_path):
    private, public = sig.sendgrid_keys()
    raw = tmp_path / "raw"
    env = _env(raw, public)
    first = start(env)
    load = Load(first.url, private)
    workers = load.run(threads=4)
    deadline = time.time() + 20
    while len(load.acked) < 1500 and time.time() < deadline:  # well into the burst
        time.sleep(0.02)
    first.kill(signal.SIGKILL)
    for w in workers:
        w.join(timeout=20)
    assert len(load.acked) >= 1500, load.statuses
    assert list(raw.glob("*.wlog.open")), "the killed receiver left its open segment"
    with running(env) as second:  # seals what the dead process left open, then serves on
        assert not list(raw.glob(f"*-p{first.proc.pid}-*.wlog.open"))
        after = Load(second.url, private)
        for w in after.run(threads=2, limit=5):
            w.join()
        assert after.refused == [] and after.unknown == []
    ids = _ingested_ids(raw, tmp_path / "out")
    acked = load.acked + after.acked
    assert load.refused == []
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    missing = [i for i in acked if counts.get(i) != 1]
    assert missing == [], f"{len(missing)} acknowledged events not exactly once"
    assert set(ids) <= set(acked) | set(load.unknown)  # nothing invented


def _full_disk(folder: Path, kind: str) -> tuple[str, bool]:
    """A tiny tmpfs at ``folder`` (as root); else, or for ``rlimit``, a file-size limit (EFBIG)."""
    folder.mkdir(parents=True)
    if kind == "tmpfs":
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return "tmpfs ENOSPC", True
    return "RLIMIT_FSIZE EFBIG", False


@pytest.mark.parametrize("kind", ["tmpfs", "rlimit"])
def test_full_disk_answers_503_and_keeps_every_acknowledged_event(tmp_path, kind):
    private, public = sig.sendgrid_keys()
    raw = tmp_path / "small"
    how, mounted = _full_disk(raw, kind)
    try:
        with running(_env(raw, public)) as receiver:
            if not mounted:  # a write past 256 KiB fails with EFBIG (SIGXFSZ is ignored)
                resource.prlimit(receiver.proc.pid, resource.RLIMIT_FSIZE, (256 << 10,) * 2)
            load = Load(receiver.url, private, batch=10)
            host = urlsplit(receiver.url)
            conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
            for _ in range(400):
                if load.post(conn) == 503:
                    break
            for _ in range(3):  # still full: still refused, never acknowledged and lost
                load.post(conn)
            conn.close()
            assert load.statuses.get(503, 0) >= 4, (how, load.statuses)
            assert load.unknown == []
        assert load.acked, how
        ids = _ingested_ids(raw, tmp_path / "out")
        assert sorted(ids) == sorted(load.acked), how
    finally:
        if mounted:
            subprocess.run(["umount", str(raw)], check=False)


def test_sealing_cuts_a_torn_tail(tmp_path):
    """A record cut by a power loss (never fsync'd, so never acknowledged) is not read."""
    path = tmp_path / f"x-p1-20260101T000000Z-000001{rawlog.OPEN}"
    whole = rawlog.encode("sendgrid", time.time(), {}, b'[{"a": 1}]')
    torn = rawlog.encode("sendgrid", time.time(), {}, b'[{"b": 2}]')[:-5]
    path.write_bytes(whole + whole + torn)
    sealed = seal_file(path)
    assert sealed is not None and sealed.name.endswith(rawlog.SEALED)
    assert sealed.stat().st_size == 2 * len(whole)
    assert len(rawlog.read_segment(sealed)) == 2
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def test_a_restart_under_the_same_pid_seals_its_earlier_segment(tmp_path):
    """In a container the receiver is pid 1 every time: its own pid in a name is a past life."""
    from loopexp.collect.segments import SegmentWriter

    writer = SegmentWriter(tmp_path, "box")
    name = f"box-p{os.getpid()}-20260101T000000Z-000001{rawlog.OPEN}"
    (tmp_path / name).write_bytes(rawlog.encode("sendgrid", time.time(), {}, b"[]"))
    other = f"other-p{os.getpid()}-20260101T000000Z-000001{rawlog.OPEN}"
    (tmp_path / other).write_bytes(rawlog.encode("sendgrid", time.time(), {}, b"[]"))
    sealed = writer.recover()
    assert [p.name for p in sealed] == [name.removesuffix(".open")]
    assert (tmp_path / other).exists()  # another instance's segment is left alone
