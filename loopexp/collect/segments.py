"""The raw log's writer: append, fsync, then acknowledge; rotate and seal segments atomically.

Requests hand their record to :meth:`SegmentWriter.append` and wait; one writer thread takes every
record queued since its last round, writes them in one ``write`` and makes them durable with one
``fsync`` (group commit: the batch is whatever arrived during the previous fsync, so a busy
receiver pays one fsync for many requests), then wakes the requests. A failed write or fsync
(ENOSPC, EIO) truncates the segment back to its last durable end and fails every request of the
batch, which the app answers 503 so the ESP retries: nothing acknowledged is ever lost.

A segment rotates when it reaches ``max_bytes`` or ``max_age_s``; sealing is fsync, then an atomic
rename from ``….wlog.open`` to ``….wlog`` and an fsync of the folder. Names carry the instance id
and the process id, so several receivers (hosts, or workers of one host) share a folder without
coordination. At start a writer seals the open segments a dead process of its instance left
behind, cutting a torn tail (a record whose fsync never returned, so never acknowledged).

Written here rather than taken from a library: no well-kept Python library offers an fsync'd,
group-committed append log with atomic segment sealing (logging handlers neither fsync nor seal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loopexp.core.errors import StateError
from loopexp.core.processes import pid_alive
from loopexp.events import rawlog

log = logging.getLogger(__name__)


class StorageError(StateError):
    """The raw log could not make a record durable (disk full, I/O error): answer 503."""


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME = re.compile(r"^(?P<instance>.+)-p(?P<pid>\d+)-\d{8}T\d{6}Z-\d{6}\.wlog\.open$")


def safe_instance(instance: str) -> str:
    """An instance id usable in a file name (other characters become ``_``)."""
    return _SAFE.sub("_", instance).strip("_") or "receiver"


@dataclass
class _Pending:
    data: bytes
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def seal_file(path: Path, end: int | None = None) -> Path | None:
    """Seal an open segment: cut a torn tail, fsync, rename atomically (an empty one is removed).

    ``end``: where its durable records end, when known (else found by scanning the file).
    """
    size = path.stat().st_size
    if end is None:
        _, end = rawlog.scan(path.read_bytes())
    if end == 0:
        path.unlink()
        return None
    with path.open("r+b") as f:
        if end < size:
            f.truncate(end)
        os.fsync(f.fileno())
    sealed = path.with_name(path.name[: -len(rawlog.OPEN)] + rawlog.SEALED)
    os.replace(path, sealed)
    _fsync_dir(path.parent)
    return sealed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """The append-only, group-committed segment log of one receiver process."""

    def __init__(
        self,
        folder: str | Path,
        instance: str,
        *,
        max_bytes: int = 64 << 20,
        max_age_s: float = 300.0,
        fsync: bool = True,
        on_commit: Callable[[float, int], None] | None = None,
        on_sealed: Callable[[Path], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.instance = safe_instance(instance)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync = fsync
        self.on_commit = on_commit
        self.on_sealed = on_sealed
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened = 0.0
        self._seq = 0

    # --- I/O boundary (a test may replace these to inject faults) ---------------------------
    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _sync(self, fd: int) -> None:
        os.fsync(fd)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Seal what a dead process of this instance left open, then start the writer thread."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._thread = threading.Thread(target=self._run, name="loopexp-segments", daemon=True)
        self._thread.start()

    def recover(self) -> list[Path]:
        """Seal open segments of this instance whose process is gone; the sealed paths."""
        sealed = []
        for path in sorted(self.folder.glob(f"*{rawlog.OPEN}")):
            m = _NAME.match(path.name)
            if not m or m["instance"] != self.instance:
                continue
            pid = int(m["pid"])
            # our own pid: an earlier life of this process id (a container's pid 1 restarted)
            if pid != os.getpid() and pid_alive(pid):
                continue
            done = seal_file(path)
            if done is not None:
                sealed.append(done)
        return sealed

    def close(self) -> None:
        """Write what is queued, seal the open segment and stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        self._seal()

    async def append(self, data: bytes) -> None:
        """Return once ``data`` is durable in a segment; :class:`StorageError` if it cannot be."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._stop:
                raise StorageError("the receiver is shutting down")
            self._queue.append(_Pending(data, future, loop))
            self._cond.notify()
        await future

    # --- the writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    if not self._cond.wait(timeout=self._idle_wait()):
                        break
                batch, self._queue = self._queue, []
                stop = self._stop
            if batch:
                self._commit(batch)
            elif self._fd is not None and time.time() - self._opened >= self.max_age_s:
                self._seal()
            if stop and not self._queue:
                return

    def _idle_wait(self) -> float:
        if self._fd is None:
            return 1.0
        return max(0.01, min(1.0, self._opened + self.max_age_s - time.time()))

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            self._commit_batch(batch)
        except Exception as exc:  # a bug must fail the requests (503), never hang them
            log.exception("segment writer failed")
            error = StorageError(f"cannot store webhook records: {exc}")
            for p in batch:
                p.loop.call_soon_threadsafe(_settle, p.future, error)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        data = b"".join(p.data for p in batch)
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            self._rotate_if_due()
            fd = self._open()
            try:
                self._write(fd, data)
                if self.fsync:
                    self._sync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # back to the last durable end
                    os.ftruncate(fd, self._size)
                raise
            self._size += len(data)
        except OSError as exc:
            error = StorageError(f"cannot store webhook records in {self.folder}: {exc}")
        if error is None and self.on_commit is not None:
            self.on_commit(time.perf_counter() - started, len(data))
        for p in batch:
            p.loop.call_soon_threadsafe(_settle, p.future, error)

    def _rotate_if_due(self) -> None:
        if self._fd is not None and (
            self._size >= self.max_bytes or time.time() - self._opened >= self.max_age_s
        ):
            self._seal()

    def _open(self) -> int:
        if self._fd is None:
            self._seq += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            name = f"{self.instance}-p{os.getpid()}-{stamp}-{self._seq:06d}{rawlog.OPEN}"
            self._path = self.folder / name
            self._fd = os.open(
                self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640
            )
            _fsync_dir(self.folder)  # the new name is durable before any record is acknowledged
            self._size = 0
            self._opened = time.time()
        return self._fd

    def _seal(self) -> None:
        if self._fd is None or self._path is None:
            return
        path, self._path = self._path, None
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
        try:
            sealed = seal_file(path, self._size)
        except OSError as exc:  # left open: the next start of this instance seals it
            log.error("cannot seal %s (%s); it is sealed at the next start", path, exc)
            return
        if sealed is not None and self.on_sealed is not None:
            self.on_sealed(sealed)


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():  # the request went away (client disconnect); its record is stored anyway
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
