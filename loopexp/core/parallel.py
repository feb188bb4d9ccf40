"""Split a per-row hashing loop across the machine's cores with forked processes.

Our own helper, not a library's: hashlib keeps the GIL for inputs shorter than 2 KiB, so threads
do not help the short per-recipient hashes of :mod:`loopexp.assignment.assign` and
:mod:`loopexp.core.keys`, and a
process pool pickles its inputs and outputs (measured slower than one core in
bench/bench_assign.py). A forked child sees the parent's arrays as they are (copy-on-write, no
pickling) and writes its rows straight into an anonymous shared mapping, so the only cost is the
fork itself (milliseconds).

The result never depends on how the rows were split: each row is computed by the same function
whichever process runs it. A child that fails or hangs is not trusted: its rows are computed again
in the parent, so a worker problem costs time, never a wrong or missing row.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import sys
import time
from collections.abc import Callable

import numpy as np

from loopexp.core import config

log = logging.getLogger(__name__)

#: Fewest rows worth a forked worker: below this the fork costs more than the rows it takes.
MIN_ROWS_PER_WORKER = 1 << 19
#: A child still running this long after the parent's own share, plus 20 times that share's time,
#: is taken as stuck: it is killed and its rows are computed in the parent.
STUCK_AFTER_SECONDS = 60.0
#: Rows a worker takes at a time (small enough to balance the workers, large enough to be cheap).
PART_ROWS = 1 << 18
_MAX_PARTS = 1024  # their 4-byte numbers fill at most PIPE_BUF (4096) bytes of the pipe


def available_workers() -> int:
    """Processes the hashing may use: this process's CPUs, capped by ``$LOOPEXP_HASH_WORKERS``.

    1 where ``fork`` is missing or unsafe (Windows; macOS, whose system libraries do not allow it).
    """
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return 1
    return max(1, min(config.usable_cpus(), config.hash_workers_cap()))


def fill_rows(
    n: int,
    dtype: np.dtype | type,
    fill: Callable[[int, int, np.ndarray], None],
    workers: int | None = None,
    min_rows_per_worker: int | None = None,
) -> np.ndarray:
    """``n`` rows of ``dtype``, rows ``lo:hi`` written by ``fill(lo, hi, out)`` into ``out``.

    ``fill`` must only write ``out`` (a view of rows ``lo:hi``), each row's value depending on
    that row alone. See :class:`RowJob` for the split; this is ``RowJob(...).result()``.
    Returns an ordinary (private) NumPy array.
    """
    with RowJob(n, dtype, fill, workers, min_rows_per_worker) as job:
        return job.result()


class RowJob:
    """Rows being filled by forked workers while the caller goes on; :meth:`result` joins in.

    The rows are cut into parts of :data:`PART_ROWS` rows that the workers take one at a time
    from a pipe (reads of 4 bytes from a pipe are atomic), so a worker that a busy machine slows
    down simply takes fewer parts. ``workers`` (default :func:`available_workers`; fewer when a
    worker would get under ``min_rows_per_worker``, default :data:`MIN_ROWS_PER_WORKER`) counts
    the calling process, which takes parts only in :meth:`result`: work done in between overlaps
    with the children's. Use it as a context manager, so that children are stopped if the caller
    fails before :meth:`result`.
    """

    def __init__(
        self,
        n: int,
        dtype: np.dtype | type,
        fill: Callable[[int, int, np.ndarray], None],
        workers: int | None = None,
        min_rows_per_worker: int | None = None,
    ) -> None:
        self.n, self.dtype, self._fill = n, np.dtype(dtype), fill
        workers = available_workers() if workers is None else max(1, workers)
        per_worker = MIN_ROWS_PER_WORKER if min_rows_per_worker is None else min_rows_per_worker
        workers = max(1, min(workers, n // max(1, per_worker)))
        self._children: dict[int, int] = {}
        self._shared: mmap.mmap | None = None
        if workers == 1:
            return
        parts = min(_MAX_PARTS, max(4 * workers, -(-n // PART_ROWS)))
        self._bounds = [n * i // parts for i in range(parts + 1)]
        # Rows, then one "done" flag per part; anonymous and MAP_SHARED: children write here.
        self._shared = mmap.mmap(-1, n * self.dtype.itemsize + parts)
        self._view = np.frombuffer(self._shared, dtype=self.dtype, count=n)
        self._done = np.frombuffer(
            self._shared, np.uint8, count=parts, offset=n * self.dtype.itemsize
        )
        self._tokens, writer = os.pipe()
        os.write(writer, np.arange(parts, dtype="<u4").tobytes())  # <= PIPE_BUF: never blocks
        os.close(writer)  # once the parts are taken, a read returns b"": nothing left
        for _ in range(workers - 1):
            try:
                pid = os.fork()
            except OSError:  # no process to spare: the others (at least the caller) do its parts
                break
            if pid == 0:  # the child: never return into the caller's code or its exit handlers
                code = 1
                try:
                    self._work()
                    code = 0
                finally:
                    os._exit(code)
            self._children[pid] = len(self._children)

    def _work(self) -> None:
        """Take parts from the pipe and fill them until none are left."""
        while len(token := os.read(self._tokens, 4)) == 4:
            part = int.from_bytes(token, "little")
            lo, hi = self._bounds[part], self._bounds[part + 1]
            self._fill(lo, hi, self._view[lo:hi])
            self._done[part] = 1

    def result(self) -> np.ndarray:
        """Fill the parts left, wait for the children, redo any part a child did not finish."""
        if self._shared is None:
            out = np.empty(self.n, dtype=self.dtype)
            self._fill(0, self.n, out)
            return out
        started = time.monotonic()
        self._work()
        # A child still busy long after the parts ran out is stuck: its part is redone here.
        own = time.monotonic() - started
        deadline = time.monotonic() + STUCK_AFTER_SECONDS + 20.0 * own
        _reap(self._children, deadline)
        for part in np.flatnonzero(self._done == 0):
            lo, hi = self._bounds[part], self._bounds[part + 1]
            log.warning("rows %d:%d were not filled by a worker; filling them here", lo, hi)
            self._fill(lo, hi, self._view[lo:hi])
        return self._view.copy()

    def close(self) -> None:
        """Stop any children still running and free the shared memory (idempotent)."""
        _reap(self._children, deadline=time.monotonic(), why=None)
        if self._shared is not None:
            os.close(self._tokens)
            self._view = self._done = None
            # After an error its traceback may still hold a view: then the GC unmaps it later.
            with contextlib.suppress(BufferError):
                self._shared.close()
            self._shared = None

    def __enter__(self) -> RowJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reap(children: dict[int, int], deadline: float, why: str | None = "is stuck") -> None:
    """Wait for the children (pid: worker number) until ``deadline``, then kill those left.

    Each child is removed from ``children`` once reaped (so an interrupted wait can be resumed).
    A failed or killed child is logged (with ``why`` unless None); its unfinished part is found
    by its "done" flag, not here.
    """
    pause = 0.001
    while children:
        for pid in list(children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # already reaped
                done, status = pid, 0
            if done:
                worker = children.pop(pid)
                if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                    log.warning("hashing worker %d failed (status %d)", worker, status)
        if children and time.monotonic() > deadline:
            for pid in list(children):
                worker = children.pop(pid)
                if why:
                    log.warning("hashing worker %d %s: stopped", worker, why)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            return
        if children:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
