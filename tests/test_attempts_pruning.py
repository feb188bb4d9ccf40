"""A daily cron must not fill the disk with attempt folders, nor lose one that is still needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from loopexp.run.attempts import ATTEMPTS, MANIFEST, prune_attempts


def _attempt(out: Path, name: str, state: str | None, age_days: int) -> Path:
    path = out / ATTEMPTS / name
    path.mkdir(parents=True)
    if state is not None:
        (path / MANIFEST).write_text(json.dumps({"state": state}))
    (path / "report.html").write_text("x")
    stamp = 1_790_000_000 - age_days * 86_400
    os.utime(path, (stamp, stamp))
    return path


def test_only_old_finished_attempts_are_removed(tmp_path: Path) -> None:
    old_logged = _attempt(tmp_path, "a1", "logged", 9)
    old_failed = _attempt(tmp_path, "a2", "failed", 8)
    not_uploaded = _attempt(tmp_path, "a3", "analysed", 7)  # `loopexp upload` still needs it
    running = _attempt(tmp_path, "a4", "running", 6)
    no_manifest = _attempt(tmp_path, "a5", None, 5)
    recent = [_attempt(tmp_path, f"b{i}", "logged", 3 - i) for i in range(3)]
    removed = prune_attempts(tmp_path, keep=3)
    assert sorted(removed) == sorted([old_logged, old_failed])
    left = {p.name for p in (tmp_path / ATTEMPTS).iterdir()}
    assert left == {not_uploaded.name, running.name, no_manifest.name, *(p.name for p in recent)}


def test_the_attempt_just_published_is_kept_and_the_default_reads_the_env(
    tmp_path: Path, monkeypatch
) -> None:
    current = _attempt(tmp_path, "old-but-current", "logged", 30)
    others = [_attempt(tmp_path, f"c{i}", "logged", 10 - i) for i in range(4)]
    monkeypatch.setenv("LOOPEXP_KEEP_ATTEMPTS", "2")
    removed = prune_attempts(tmp_path, keep_also=current)
    assert current.exists() and sorted(removed) == sorted(others[:2])
    assert prune_attempts(tmp_path / "nothing-here") == []
