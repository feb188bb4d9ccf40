"""Attempt folders of ``loopexp run``: the manifest, publishing a complete attempt, pruning.

Each attempt writes into its own fresh folder ``<out>/attempts/<attempt id>/``; only a complete
attempt is published to ``<out>/`` (``latest.json`` says which attempt and run it is), so a killed
or failed run never leaves another run's decision looking current. After a logged run the oldest
finished attempts beyond ``$LOOPEXP_KEEP_ATTEMPTS`` are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from loopexp.core import config

#: The manifest of an attempt folder (what ``loopexp upload`` reads) and of the output folder.
MANIFEST = "run.json"
LATEST = "latest.json"
ATTEMPTS = "attempts"


def prune_attempts(out: Path, keep: int | None = None, keep_also: Path | None = None) -> list[Path]:
    """Remove the oldest finished attempt folders of ``out``, keeping the newest ``keep``.

    Only attempts whose work is done are removed: logged to MLflow (their files are in the run's
    artifacts) or failed. An attempt still running, or analysed but not yet logged (``loopexp
    upload`` needs it), is never touched, nor is ``keep_also`` (the one just published: the
    files in ``out`` are hard links, so they survive its folder either way). Returns the removed.
    """
    if keep is None:
        keep = config.keep_attempts()
    folder = out / ATTEMPTS
    if not folder.is_dir():
        return []
    attempts = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    removed = []
    for path in attempts[: max(len(attempts) - keep, 0)]:
        if keep_also is not None and path.resolve() == keep_also.resolve():
            continue
        try:
            state = read_json(path / MANIFEST).get("state")
        except (OSError, ValueError):
            continue  # no readable manifest: not ours to judge
        if state in {"logged", "failed"}:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def new_attempt_id() -> str:
    """A fresh attempt id: UTC time (sorts by start) and a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """A manifest (or latest.json) read back."""
    return json.loads(path.read_text(encoding="utf-8"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def unpublish(out: Path, state: dict[str, Any]) -> None:
    """Remove the previously published files from ``out`` and record ``state`` in latest.json."""
    latest = out / LATEST
    if latest.exists():
        with contextlib.suppress(ValueError, OSError):
            for name in read_json(latest).get("published", []):
                _remove(out / name)
    write_json(latest, {**state, "published": []})


def publish(out: Path, attempt_dir: Path, state: dict[str, Any]) -> None:
    """Copy a complete attempt's files to ``out`` (hard links when possible), replacing the last."""
    unpublish(out, {**state, "state": "publishing"})
    names = []
    for item in sorted(attempt_dir.iterdir()):
        if item.name.startswith("."):
            continue
        target = out / item.name
        tmp = out / f".{item.name}.{os.getpid()}.tmp"
        _remove(tmp)
        if item.is_dir():
            shutil.copytree(item, tmp, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(item), str(tmp))
        _remove(target)
        os.replace(tmp, target)
        names.append(item.name)
    write_json(out / LATEST, {**state, "published": names})


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


__all__ = [
    "ATTEMPTS",
    "LATEST",
    "MANIFEST",
    "new_attempt_id",
    "prune_attempts",
    "publish",
    "read_json",
    "unpublish",
    "write_json",
]
