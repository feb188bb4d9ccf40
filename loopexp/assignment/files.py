"""Files of an assignment: the Parquet contract's writer and the plain send lists.

Split from :mod:`loopexp.assignment.assign` (which re-exports :func:`write_send_lists`) to keep
that module within the size limit.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopexp.events.scope import stamped
from loopexp.metrics.definitions import HOLDOUT


def write_assignment_parquet(table: pa.Table, path: str | Path) -> None:
    """Write assignment.parquet, recording when it was made (issue 28).

    The time (:data:`loopexp.events.scope.ASSIGNED_AT_KEY` in the file's metadata) lets the
    analysis quarantine events from before the assignment as ``before_assignment``.
    """
    pq.write_table(stamped(table), path)


def write_send_lists(assignment: pd.DataFrame, folder: str | Path) -> dict[str, Path]:
    """Write one CSV send list per mailed variant (holdout gets none); return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for variant, rows in assignment.groupby("variant_id", sort=True):
        if variant == HOLDOUT:
            continue
        path = folder / f"send_list_{variant}.csv"
        rows[["recipient_key", "segment"]].to_csv(path, index=False)
        paths[str(variant)] = path
    return paths
