"""Mailgun's token replay cache, persisted so a restart does not forget what it has seen.

Mailgun signs only ``timestamp + token``; a token is remembered for as long as its timestamp is
fresh enough to pass (the tolerance), after which the freshness check refuses it anyway. The file
is append-only (``<timestamp> <token>`` lines, fsync'd), compacted when loaded. One cache per
receiver process: a replay aimed at another instance is caught there only by that instance's
cache, and ingest's dedupe removes a replayed copy of a stored event either way.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class TokenCache:
    """Tokens seen within ``ttl_s`` seconds, in memory and in an append-only file."""

    def __init__(self, path: str | Path, ttl_s: float, clock=time.time) -> None:
        self.path = Path(path)
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._load()

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cutoff = self.clock() - self.ttl_s
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                stamp, _, token = line.partition(" ")
                try:
                    if token and float(stamp) >= cutoff:
                        self._seen[token] = float(stamp)
                except ValueError:
                    continue
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{t} {k}\n" for k, t in self._seen.items()), encoding="utf-8")
        os.replace(tmp, self.path)

    def seen(self, token: str) -> bool:
        """Whether the token was used within the window."""
        with self._lock:
            stamp = self._seen.get(token)
            return stamp is not None and stamp >= self.clock() - self.ttl_s

    def add(self, token: str, stamp: float) -> None:
        """Remember a token (after its request was stored), durably."""
        with self._lock:
            self._seen[token] = stamp
            cutoff = self.clock() - self.ttl_s
            if len(self._seen) > 10_000:
                self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, f"{stamp} {token}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
