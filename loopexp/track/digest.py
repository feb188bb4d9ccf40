"""An iteration's digest as a run tag: the closed-loop report without downloading artifacts.

The report over a campaign reads every iteration. Reading each run's ``results.json`` (and
``send_time.json``, ``policy.json``) is one download per iteration: with 1,000 iterations on a team
server, minutes. Each analysed run now carries :class:`~loopexp.learn.history.IterationDigest` as
the tag ``loopexp.report.digest`` (JSON, written when the run is logged), so one search of the
store answers; runs logged before it (or with a digest too big for a tag) fall back to the files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from loopexp.analysis.results import ExperimentResults
from loopexp.core import tags as tag
from loopexp.learn.history import DIGEST_VERSION, IterationDigest, iteration_digest

#: MLflow's limit on a tag's value (``MAX_TAG_VAL_LENGTH``; the stores' column is 8,000 wide).
TAG_VALUE_LIMIT = 8000


def digest_tags(
    results: ExperimentResults,
    send_time: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """``{loopexp.report.digest: JSON}``, or nothing when it would not fit or not read back same.

    Without the tag the report reads the run's files, as for runs logged before the digest.
    """
    digest = iteration_digest(results, send_time, policy)
    text = digest.model_dump_json(exclude_defaults=False)
    if len(text) > TAG_VALUE_LIMIT or read_digest({tag.DIGEST: text}) != digest:
        return {}  # e.g. hundreds of links, or a NaN that JSON cannot carry: keep the files
    return {tag.DIGEST: text}


def read_digest(tags: Mapping[str, str]) -> IterationDigest | None:
    """The run's digest, None when it has none (or one of another version, or unreadable)."""
    text = tags.get(tag.DIGEST)
    if not text:
        return None
    try:
        raw = json.loads(text)
        if raw.get("version") != DIGEST_VERSION:
            return None
        return IterationDigest.model_validate(raw)
    except (ValueError, ValidationError, AttributeError):
        return None


__all__ = ["TAG_VALUE_LIMIT", "digest_tags", "read_digest"]
