"""Host-local locks of the tracking stage: a file ``flock`` per name under the lock folder.

Light (standard library only) so a lock is taken before MLflow is imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

from loopexp.core import config


@contextlib.contextmanager
def file_lock(name: str, timeout: float | None = None) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<lock_dir>/<name>.lock``; wait at most ``timeout`` s.

    The kernel releases the lock when the process dies, even by kill -9, so a lock never goes
    stale. Raises :class:`TimeoutError` when another process holds it for longer than ``timeout``.
    """
    path = config.lock_dir() / f"{name}.lock"
    with path.open("a+") as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(str(path)) from None
                time.sleep(0.2)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def short_hash(*parts: str) -> str:
    """A short stable hash of strings (lock file names)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
