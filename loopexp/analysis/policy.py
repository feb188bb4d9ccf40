"""The analysis of an iteration that deploys a policy: judged on its exploration share (issue 27).

When a spec's ``policy:`` has rules, the rules chose most recipients' variants: comparing variants
over everyone would compare the populations the rules picked for them (confounded), and the
variant weights no longer describe the split, so an SRM check against them fails on a correct
send. Only the exploration share (the ``explored`` column of the assignment: a salted-hash sample
of the whole audience, holdout included, randomised uniformly over the variants) is a randomised
experiment. :func:`exploration_view` narrows the engine to it — the rules' recipients go to one
group the engine keeps apart (their events stay matched, not "unassigned") — and checks its split
against equal shares, so a broken split inside the exploration share is still caught as
``invalid_srm``. The policy share is judged by its realised gain (:mod:`loopexp.learn.policy.step`,
``policy.json``), not here.
"""

from __future__ import annotations

import dataclasses
import glob
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopexp.analysis.results import ExperimentInfo, ExperimentResults, PolicyShareInfo
from loopexp.assignment.assign import unit_interval
from loopexp.assignment.policy import EXPLORE_SALT, deployed
from loopexp.core.errors import InputError
from loopexp.core.sql import sql_string
from loopexp.design.spec import ExperimentSpec
from loopexp.metrics.engine import MetricTable
from loopexp.metrics.sources import ASSIGNMENT_COLUMNS, attach, connect

#: The engine's group for the recipients the rules chose: never a variant id (ids are slugs).
POLICY_GROUP = "~policy"


@dataclass(frozen=True)
class ExplorationView:
    """What the engine and the analysis read instead of the spec and assignment as given."""

    spec: ExperimentSpec
    """The spec with equal variant weights: the exploration share's split."""
    assignment: pd.DataFrame | Path
    """The assignment with the rules' recipients relabelled :data:`POLICY_GROUP` (a Parquet copy
    written by DuckDB; a frame only for an assignment written before the ``explored`` column)."""
    variants: list[str]
    """Groups the engine may meet: the spec's and :data:`POLICY_GROUP`."""
    exploration: float
    folder: tempfile.TemporaryDirectory | None = None
    """Where the copy lives: removed with the view (or by :meth:`close`)."""

    def close(self) -> None:
        """Remove the relabelled copy."""
        if self.folder is not None:
            self.folder.cleanup()

    def strip(self, table: MetricTable) -> tuple[MetricTable, int]:
        """``table`` without :data:`POLICY_GROUP`, and how many recipients it had."""
        n_policy = table.assigned.get(POLICY_GROUP, 0)
        links = table.links
        if links is not None and "variant_id" in links.columns:
            links = links[links["variant_id"] != POLICY_GROUP].reset_index(drop=True)
        return dataclasses.replace(
            table,
            stats=[s for s in table.stats if s.variant_id != POLICY_GROUP],
            assigned={g: n for g, n in table.assigned.items() if g != POLICY_GROUP},
            links=links,
        ), n_policy

    def annotate(
        self, results: ExperimentResults, spec: ExperimentSpec, n_policy: int
    ) -> ExperimentResults:
        """``results`` under ``spec``'s own identity, saying what share they describe."""
        explored = results.data.recipients
        results.experiment = ExperimentInfo.from_spec(spec)
        results.data.recipients = explored + n_policy
        results.policy_share = PolicyShareInfo(
            explored=explored, policy=n_policy, exploration=self.exploration
        )
        results.decision.reasons.append(
            f"Policy iteration: the variants are compared and the split checked on the "
            f"exploration share only ({explored:,} of {explored + n_policy:,} recipients, "
            f"randomised uniformly); the {n_policy:,} the rules chose are judged by the policy's "
            "realised gain (policy.json)."
        )
        return results


def read_assignment(path: str | Path) -> pd.DataFrame:
    """The assignment file(s) at ``path`` (Parquet or CSV; globs and folders allowed)."""
    names = sorted(glob.glob(str(path))) or [str(path)]
    frames = []
    for name in names:
        try:
            if name.endswith(".csv"):
                frames.append(pd.read_csv(name, dtype={"recipient_key": str}))
            else:
                frames.append(pd.read_parquet(name))
        except (OSError, ValueError) as exc:
            raise InputError(f"assignment {name}: cannot be read ({exc})") from exc
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def explored_flags(spec: ExperimentSpec, assignment: pd.DataFrame, where: str) -> np.ndarray:
    """The ``explored`` column; for an assignment written before it existed, its salted hash."""
    if "explored" not in assignment.columns:
        assert spec.policy is not None
        keys = assignment["recipient_key"].astype(str)
        return unit_interval(spec.salt + EXPLORE_SALT, keys) < spec.policy.exploration
    column = assignment["explored"]
    if column.dtype == bool:
        return column.to_numpy()
    text = column.astype(str).str.strip().str.lower()
    bad = ~text.isin(["true", "false", "1", "0"])
    if bad.any():
        row = int(np.argmax(bad.to_numpy())) + 1
        raise InputError(
            f"{where}: column explored must be true/false; row {row} "
            f"has {column[bad].iloc[0]!r}. Re-write the assignment with `loopexp assign`"
        )
    return text.isin(["true", "1"]).to_numpy()


def exploration_view(spec: ExperimentSpec, assignment_path: str | Path) -> ExplorationView | None:
    """The exploration share of a policy iteration (None: the spec deploys no rules)."""
    if not deployed(spec):
        return None
    assert spec.policy is not None
    uniform = [v.model_copy(update={"weight": 1.0}) for v in spec.variants]
    copied = _relabelled_copy(spec, assignment_path)
    if copied is not None:
        return ExplorationView(
            spec=spec.model_copy(update={"variants": uniform}),
            assignment=copied[0],
            variants=[*spec.expected_shares(), POLICY_GROUP],
            exploration=spec.policy.exploration,
            folder=copied[1],
        )
    frame = read_assignment(assignment_path)  # written before the `explored` column: the hash
    flags = explored_flags(spec, frame, str(assignment_path))
    frame = frame.copy()
    frame["variant_id"] = np.where(flags, frame["variant_id"].astype(str), POLICY_GROUP)
    return ExplorationView(
        spec=spec.model_copy(update={"variants": uniform}),
        assignment=frame,
        variants=[*spec.expected_shares(), POLICY_GROUP],
        exploration=spec.policy.exploration,
    )


_FLAG = "lower(trim(CAST(explored AS VARCHAR)))"


def _relabelled_copy(
    spec: ExperimentSpec, path: str | Path
) -> tuple[Path, tempfile.TemporaryDirectory] | None:
    """The assignment with the rules' recipients relabelled, written by DuckDB to a Parquet copy.

    At 10 M recipients the assignment never enters pandas: DuckDB streams it within the spec's
    memory limit. None when the assignment has no ``explored`` column (the hash fallback).
    """
    folder = tempfile.TemporaryDirectory(prefix="loopexp-policy-", dir=spec.data.temp_directory)
    out = Path(folder.name) / "assignment.parquet"
    with connect(spec.data.memory_limit, spec.data.temp_directory) as (con, _):
        attach(con, "assignment_raw", str(path), "assignment", ASSIGNMENT_COLUMNS)
        columns = [row[0] for row in con.execute("DESCRIBE assignment_raw").fetchall()]
        if "explored" not in columns:
            folder.cleanup()
            return None
        bad = con.execute(
            f"SELECT count(*), any_value(explored) FROM assignment_raw "
            f"WHERE explored IS NULL OR {_FLAG} NOT IN ('true', 'false', '1', '0')"
        ).fetchone()
        if bad[0]:
            folder.cleanup()
            raise InputError(
                f"{path}: column explored must be true/false; {bad[0]:,} row(s) are not (e.g. "
                f"{bad[1]!r}). Re-write the assignment with `loopexp assign`"
            )
        relabel = (
            f"CASE WHEN {_FLAG} IN ('true', '1') THEN CAST(variant_id AS VARCHAR) "
            f"ELSE {sql_string(POLICY_GROUP)} END AS variant_id"
        )
        con.execute(
            f"COPY (SELECT * REPLACE ({relabel}) FROM assignment_raw) "
            f"TO {sql_string(str(out))} (FORMAT parquet)"
        )
    return out, folder


__all__ = ["POLICY_GROUP", "ExplorationView", "exploration_view", "explored_flags"]
