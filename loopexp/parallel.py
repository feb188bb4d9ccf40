"""Split a per-row hashing loop across the machine's cores with forked processes.

Our own helper, not a library's: hashlib keeps the GIL for inputs shorter than 2 KiB, so threads
do not help the short per-recipient hashes of :mod:`loopexp.assign` and :mod:`loopexp.keys`, and a
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
import itertools
import logging
import mmap
import os
import signal
import sys
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

#: Fewest rows worth a forked worker: below this the fork costs more than the rows it takes.
MIN_ROWS_PER_WORKER = 1 << 19
#: A child still running this long after the parent's own share, plus 20 times that share's time,
#: is taken as stuck: it is killed and its rows are computed in the parent.
STUCK_AFTER_SECONDS = 60.0
#: Environment variable capping the worker processes (``1`` hashes in the calling process only).
ENV_WORKERS = "LOOPEXP_HASH_WORKERS"


def available_workers() -> int:
    """Processes the hashing may use: this process's CPUs, capped by ``$LOOPEXP_HASH_WORKERS``.

    1 where ``fork`` is missing or unsafe (Windows; macOS, whose system libraries do not allow it).
    """
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cap = os.environ.get(ENV_WORKERS, "").strip()
    limit = int(cap) if cap.isdigit() and int(cap) > 0 else 8
    return max(1, min(cpus or 1, limit))


def fill_rows(
    n: int,
    dtype: np.dtype | type,
    fill: Callable[[int, int, np.ndarray], None],
    workers: int | None = None,
    min_rows_per_worker: int | None = None,
) -> np.ndarray:
    """``n`` rows of ``dtype``, rows ``lo:hi`` written by ``fill(lo, hi, out)`` into ``out``.

    The rows are split into contiguous ranges, one per worker (``workers``, default
    :func:`available_workers`; fewer when a worker would get under ``min_rows_per_worker``,
    default :data:`MIN_ROWS_PER_WORKER`);
    the calling process fills the first range and forked children the others. ``fill`` must only
    write ``out`` (a view of the range's rows) and must not depend on the range's bounds beyond
    the rows it computes. Returns an ordinary (private) NumPy array.
    """
    dtype = np.dtype(dtype)
    workers = available_workers() if workers is None else max(1, workers)
    per_worker = MIN_ROWS_PER_WORKER if min_rows_per_worker is None else min_rows_per_worker
    workers = max(1, min(workers, n // max(1, per_worker)))
    if workers == 1:
        out = np.empty(n, dtype=dtype)
        fill(0, n, out)
        return out
    bounds = [n * i // workers for i in range(workers + 1)]
    shared = mmap.mmap(-1, n * dtype.itemsize)  # anonymous and MAP_SHARED: children write here
    try:
        view = np.frombuffer(shared, dtype=dtype, count=n)
        children: dict[int, tuple[int, int]] = {}
        failed: list[tuple[int, int]] = []
        try:
            for lo, hi in itertools.pairwise(bounds[1:]):
                try:
                    children[_fork(fill, lo, hi, view)] = (lo, hi)
                except OSError:  # no process to spare: this range is ours too
                    failed.append((lo, hi))
            started = time.monotonic()
            fill(bounds[0], bounds[1], view[bounds[0] : bounds[1]])
            # Our share took `own` seconds; a child given many times that is stuck: redo it here.
            own = time.monotonic() - started
            failed += _reap(children, deadline=time.monotonic() + STUCK_AFTER_SECONDS + 20.0 * own)
        except BaseException:  # interrupted or failed here: stop the children before leaving
            _reap(children, deadline=time.monotonic(), why=None)
            raise
        for lo, hi in failed:
            fill(lo, hi, view[lo:hi])
        out = view.copy()
        del view
    finally:
        # After an error its traceback may still hold a view: then the GC unmaps it later.
        with contextlib.suppress(BufferError):
            shared.close()
    return out


def _fork(fill: Callable[[int, int, np.ndarray], None], lo: int, hi: int, view: np.ndarray) -> int:
    """Start a child that fills rows ``lo:hi`` of ``view`` and exits (0 on success); its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code, never run its exit handlers
        code = 1
        try:
            fill(lo, hi, view[lo:hi])
            code = 0
        finally:
            os._exit(code)
    return pid


def _reap(
    children: dict[int, tuple[int, int]], deadline: float, why: str | None = "is stuck"
) -> list[tuple[int, int]]:
    """Wait for the children until ``deadline``; the row ranges of those that failed or hung.

    Children still running at the deadline are killed (and logged with ``why`` unless None).
    """
    failed = []
    pending = dict(children)
    pause = 0.001
    while pending:
        for pid in list(pending):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rows = pending.pop(pid)
                if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                    log.warning("hashing worker for rows %s failed; computing them here", rows)
                    failed.append(rows)
        if pending and time.monotonic() > deadline:
            for pid, rows in pending.items():
                if why:
                    log.warning("hashing worker for rows %s %s; computing them here", rows, why)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                failed.append(rows)
            break
        if pending:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    return failed
