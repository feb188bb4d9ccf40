"""Deterministic assignment: a recipient's group is a pure function of (salt, recipient key).

The same recipient always lands in the same group for the same salt, whatever the order or size of
the list, so send lists can be rebuilt at any time and joined back to events, and adding recipients
never moves existing ones. A new salt (each iteration gets one) re-randomises, so carry-over from
the last iteration does not bias the next.

Two entry points:

- :func:`assign`: a table already keyed (``recipient_key``, ``segment``) → groups; strict.
- :func:`assign_recipients`: a team's raw list (see :mod:`loopexp.assignment.recipients`) → an
  :class:`AssignmentResult` that accounts for every input row (assigned, or excluded with a
  reason), with the send lists in an ESP-import shape, the holdout list and a JSON summary.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loopexp.assignment import policy as pol  # issue 27: a spec's per-recipient policy
from loopexp.assignment.exclusions import (
    REASONS,
    ExclusionReason,
    exclusion_reasons,
    later_duplicates,
)
from loopexp.assignment.files import (  # write_send_lists: re-exported, its old home
    write_assignment_parquet,
    write_send_lists,  # noqa: F401
)
from loopexp.assignment.recipients import (
    SEGMENT_ORDER,
    PreparedRecipients,
    RecipientsError,
    _segment_codes,
    _text,
    key_column,
    prepare_arrays,
    recipient_keys,
)
from loopexp.core.keys import HashKey, load_hash_key
from loopexp.core.parallel import RowJob
from loopexp.design.spec import ExperimentSpec
from loopexp.metrics.definitions import HOLDOUT
from loopexp.stats.srm import srm_check

# Our own code, not a library's: the bucketing must be stable across machines, languages and library
# versions (a SQL engine's hash() is not), so we fix it here as SHA-256 of "salt:key".

#: Columns of ``assignment.parquet``, in order (a contract with ingest and the metrics engine).
ASSIGNMENT_COLUMNS = ("recipient_key", "variant_id", "segment", "bucket", "salt", "spec_sha256")
ASSIGNMENT_COLUMNS += ("propensity",)  # issue 27: P(the recipient's own group was drawn)
ASSIGNMENT_COLUMNS += ("explored",)  # issue 27: in the uniformly randomised share
#: Message fields a send list carries for its variant.
MESSAGE_FIELDS = ("subject", "preheader", "from_name", "content", "send_time")
_CHUNK = 1 << 18


def unit_interval(salt: str, keys: Iterable[str]) -> np.ndarray:
    """Map each key to a uniform number in [0, 1): top 53 bits of SHA-256(salt:key) / 2**53.

    53 bits is what a float64 holds exactly, so the value is exact and strictly below 1. This is
    the ``bucket`` column of ``assignment.parquet``; the golden vectors in the tests pin it.
    """
    return _top53(salt, keys).astype(np.float64) / 2.0**53


def _top53(salt: str, keys: Iterable[str] | pa.Array, workers: int | None = None) -> np.ndarray:
    """Top 53 bits of SHA-256(salt:key) per key, as uint64.

    Arrow joins ``salt:key`` in C, chunk by chunk, and one hashlib call per key hashes it (hashlib
    keeps the GIL for inputs this short, so threads do not help). Large lists are split across
    the cores by :class:`loopexp.core.parallel.RowJob` (forked workers writing into shared memory);
    ``workers`` caps them (default: every core, see
    :func:`loopexp.core.parallel.available_workers`).
    Every key is hashed the same way whichever process or chunk it falls in, so the result is the
    same for any ``workers``: bench/bench_assign.py measures the split against one process.
    """
    with _top53_job(salt, keys, workers) as job:
        return job.result() >> np.uint64(11)


def _top53_job(salt: str, keys: Iterable[str] | pa.Array, workers: int | None = None) -> RowJob:
    """:func:`_top53` started: its ``result()`` is the 64-bit prefix (shift it right by 11)."""
    if isinstance(keys, pd.Series | pd.Index) and isinstance(keys.dtype, pd.ArrowDtype):
        keys = pa.array(keys)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if not isinstance(keys, pa.Array) or keys.null_count or keys.type != pa.string():
        keys = keys.to_pylist() if isinstance(keys, pa.Array) else keys
        keys = pa.array([str(k) for k in keys], type=pa.string())
    prefix = f"{salt}:"

    def fill(lo: int, hi: int, out: np.ndarray) -> None:
        sha256 = hashlib.sha256
        for start in range(lo, hi, _CHUNK):
            chunk = pc.binary_join_element_wise(
                prefix, keys.slice(start, min(_CHUNK, hi - start)), ""
            )
            joined = b"".join([sha256(m).digest() for m in chunk.cast(pa.binary()).to_pylist()])
            out[start - lo : start - lo + len(chunk)] = np.frombuffer(joined, dtype=">u8")[::4]

    return RowJob(len(keys), np.uint64, fill, workers)


def _group_codes(u: np.ndarray, spec: ExperimentSpec) -> np.ndarray:
    """Index of each bucket's group in ``[*variant ids, holdout]``."""
    weights = np.array([v.weight for v in spec.variants], dtype=float)
    holdout = spec.audience.holdout
    # Holdout takes the bottom of [0, 1); the rest is split by cumulative weight.
    edges = holdout + (1.0 - holdout) * np.cumsum(weights) / weights.sum()
    codes = np.minimum(np.searchsorted(edges, u, side="right"), len(weights) - 1)
    codes[u < holdout] = len(weights)
    return codes


def _group_names(spec: ExperimentSpec) -> np.ndarray:
    return np.array([*(v.id for v in spec.variants), HOLDOUT], dtype=object)


def groups_from_buckets(u: np.ndarray, spec: ExperimentSpec) -> np.ndarray:
    """Group (variant id, or ``holdout``) of each unit-interval bucket under ``spec``'s weights."""
    return _group_names(spec)[_group_codes(u, spec)]


def assign_groups(keys: Iterable[str], spec: ExperimentSpec) -> np.ndarray:
    """Group (variant id, or ``holdout``) of each key under ``spec``'s salt and weights."""
    return groups_from_buckets(unit_interval(spec.salt, keys), spec)


def assign(recipients: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """Assign a recipient table (``recipient_key`` and ``segment`` columns) to groups.

    Segment labels are mapped with ``spec.audience.segment_map``; a label that is neither a
    lifecycle segment nor mapped raises :class:`~loopexp.assignment.recipients.RecipientsError`
    (unless the
    spec says ``unmapped_segments: exclude``). Recipients of lifecycle segments outside the
    audience are left out. Returns ``recipient_key``, ``segment`` (the lifecycle segment) and
    ``variant_id`` (``holdout`` for the no-mail group), in input order. For a raw list with
    e-mail addresses, consent and suppression, and an account of every row, use
    :func:`assign_recipients`.
    """
    missing = {"recipient_key", "segment"} - set(recipients.columns)
    if missing:
        raise ValueError(
            f"recipient table lacks column(s) {sorted(missing)}; it needs recipient_key and segment"
        )
    labels = pc.utf8_trim_whitespace(_text(recipients["segment"]))
    codes = _segment_codes(labels, spec.audience, "recipient table", "segment")
    allowed = [SEGMENT_ORDER.index(s) for s in spec.audience.segments]
    keep = np.isin(codes, allowed)
    segment_names = np.array([s.value for s in SEGMENT_ORDER], dtype=object)
    out = pd.DataFrame(
        {
            "recipient_key": recipients["recipient_key"].to_numpy()[keep],
            "segment": segment_names[codes[keep]],
        }
    )
    if out["recipient_key"].duplicated().any():
        dupes = out.loc[out["recipient_key"].duplicated(), "recipient_key"]
        raise ValueError(f"recipient_key must be unique; first repeats: {dupes.head(5).tolist()}")
    bucket = unit_interval(spec.salt, out["recipient_key"])
    codes, propensity, explored = _policy(spec, out, bucket, recipients[keep], "recipient table")
    out["variant_id"] = _group_names(spec)[codes]
    out["propensity"] = propensity
    out["explored"] = explored
    return out


def _policy(
    spec: ExperimentSpec, rows: pd.DataFrame, bucket: np.ndarray, raw: pd.DataFrame, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group codes, propensities and explored flags: the weights' split, or the spec's policy."""
    explore = None
    if pol.deployed(spec):
        explore = unit_interval(spec.salt + pol.EXPLORE_SALT, rows["recipient_key"])
    return pol.policy_split(spec, bucket, _group_codes(bucket, spec), explore, rows, raw, where)


@dataclass(frozen=True)
class AssignmentSummary:
    """Where every input row went: ``input_rows == assigned + sum(excluded.values())``."""

    source: str
    input_rows: int
    assigned: int
    excluded: dict[str, int]
    """Rows per :class:`ExclusionReason` (every reason listed, zeros included)."""
    groups: dict[str, int]
    """Assigned recipients per group (variant ids and ``holdout``)."""
    by_segment: dict[str, dict[str, int]]
    """Assigned recipients per lifecycle segment and group."""
    srm_p_values: dict[str, float]
    """SRM χ² p-value of the split within each segment (a check of the hashing, not of a send)."""
    salt: str
    spec_sha256: str
    key_source: str | None
    """Where the e-mail hashing key came from (``demo`` for the public key); None for ids."""
    key_fingerprint: str | None
    as_of: str | None = None
    """Reference time of the recency exclusion, when there was one."""
    schema_version: str = field(default="1")

    def to_dict(self) -> dict:
        """A JSON-ready dict (``assignment_summary.json``)."""
        return asdict(self)

    def to_json(self) -> str:
        """The summary as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


@dataclass
class AssignmentResult:
    """An assignment, its exclusions, and the summary; :meth:`write` puts them in a folder."""

    assignment: pd.DataFrame
    """:data:`ASSIGNMENT_COLUMNS`; ``bucket`` is the unit-interval float of :func:`unit_interval`
    (top 53 bits of SHA-256(salt:key) / 2**53, exact in float64), not an integer bucket."""
    exclusions: pd.DataFrame
    """``row`` (1-based data row of the input), ``recipient_key`` (empty when there was none),
    ``segment_label``, ``reason``: no raw address."""
    summary: AssignmentSummary
    spec: ExperimentSpec
    emails: pa.Array | None = field(default=None, repr=False)
    """Raw addresses aligned with ``assignment`` (send lists only), when the list had them."""
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    """Wall seconds of each phase (``prepare``, ``exclude``, ``hash``, ``tables``; ``write``
    after :meth:`write`), for ``loopexp assign --verbose`` and bench/bench_assign.py."""

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write assignment.parquet, exclusions.parquet, assignment_summary.json and send_lists/.

        ``send_lists/<variant>.csv`` per mailed variant and ``send_lists/holdout.csv``: the only
        files with raw e-mail addresses. Returns the paths by name.
        """
        started = time.perf_counter()
        folder = Path(folder)
        (folder / "send_lists").mkdir(parents=True, exist_ok=True)
        paths = {
            "assignment": folder / "assignment.parquet",
            "exclusions": folder / "exclusions.parquet",
            "summary": folder / "assignment_summary.json",
        }
        table = _assignment_table(self.assignment)
        write_assignment_parquet(table, paths["assignment"])  # issue 28: records when it was made
        pq.write_table(
            pa.Table.from_pandas(self.exclusions, preserve_index=False), paths["exclusions"]
        )
        paths["summary"].write_text(self.summary.to_json() + "\n", encoding="utf-8")
        for group in [*(v.id for v in self.spec.variants), HOLDOUT]:
            if group == HOLDOUT and self.spec.audience.holdout == 0:
                continue
            path = folder / "send_lists" / f"{group}.csv"
            pacsv.write_csv(self._send_list(table, group), path)
            paths[f"send list {group}"] = path
        self.timings["write"] = time.perf_counter() - started
        return paths

    def _send_list(self, table: pa.Table, group: str) -> pa.Table:
        """ESP-import shape: address, key, variant, segment, then the variant's message fields."""
        mask = pa.array((self.assignment["variant_id"] == group).to_numpy(dtype=bool))
        rows = table.filter(mask)
        n = rows.num_rows
        columns: dict[str, pa.Array] = {}
        if self.emails is not None:
            columns["email"] = pc.utf8_trim_whitespace(self.emails.filter(mask))
        columns["recipient_key"] = rows["recipient_key"].cast(pa.string())
        columns["variant_id"] = pa.repeat(pa.scalar(group), n)
        columns["segment"] = rows["segment"].cast(pa.string())
        columns["campaign"] = pa.repeat(pa.scalar(self.spec.campaign), n)
        variant = next((v for v in self.spec.variants if v.id == group), None)
        for name in MESSAGE_FIELDS:
            value = getattr(variant, name) if variant is not None else None
            columns[name] = pa.repeat(pa.scalar(value or ""), n)
        return pa.table(columns)


def assign_recipients(
    recipients: pd.DataFrame,
    spec: ExperimentSpec,
    key: HashKey | None = None,
    history: pd.DataFrame | None = None,
    as_of: datetime | None = None,
    source: str = "recipient list",
) -> AssignmentResult:
    """Assign a team's recipient list; every input row is assigned or excluded with a reason.

    ``recipients``: columns as named in ``spec.audience.columns`` (read one with
    :func:`loopexp.assignment.recipients.read_recipients`). ``key``: the e-mail hashing key (needed
    only for
    a list keyed by e-mail; :func:`loopexp.core.keys.load_hash_key`). ``history``: past test sends
    (``recipient_key`` or ``email``, ``sent_at``), required when the spec sets
    ``audience.exclude_tested_within_days``. Raises
    :class:`~loopexp.assignment.recipients.RecipientsError` for a list that cannot be used as it is,
    including one where nobody is left to assign (the message gives the count per reason).
    """
    phase = _Phases()
    audience = spec.audience
    if key is None and key_column(recipients, audience)[1] == "email":
        key = load_hash_key()  # its error says how to set a key
    row_keys = recipient_keys(recipients, audience, key, source)
    phase("keys")
    # Every row's key is hashed by other processes while this one prepares the other columns and
    # the exclusions. An excluded row's hash is wasted, but the total never exceeds a list where
    # everyone is eligible, and at 10 M rows the overlap saves about a second (bench_assign.py).
    with _top53_job(spec.salt, row_keys.keys) as hashing:
        prepared = prepare_arrays(recipients, audience, key, source, keys=row_keys)
        phase("prepare")
        reason, as_of_text = exclusion_reasons(prepared, audience, key, history, as_of)
        phase("exclude")
        top_all = hashing.result() >> np.uint64(11)
    n = len(prepared)
    keys = prepared.keys
    eligible = np.flatnonzero(reason == 0)
    # At 10 M rows each copy of the keys costs a tenth of a second: skip those that change nothing.
    eligible_keys = keys if len(eligible) == n else keys.take(pa.array(eligible))
    top = top_all if len(eligible) == n else top_all[eligible]
    phase("hash")
    chosen, top, eligible_keys = _drop_later_duplicates(reason, eligible, eligible_keys, top)
    bucket = top.astype(np.float64)
    bucket /= 2.0**53
    segment_code = prepared.segment_code[chosen]
    rows = pol.policy_rows(spec, eligible_keys, segment_code)  # a policy's inputs (issue 27)
    raw = recipients.iloc[chosen] if pol.deployed(spec) else recipients.iloc[:0]
    group_code, propensity, explored = _policy(spec, rows, bucket, raw, source)
    assignment = _assignment_frame(spec, eligible_keys, bucket, group_code, segment_code)
    assignment["propensity"], assignment["explored"] = propensity, explored  # issue 27
    exclusions = _exclusions_frame(reason, prepared)
    emails = prepared.emails.take(pa.array(chosen)) if prepared.emails is not None else None
    summary = _summarise(
        reason, segment_code, group_code, spec, source, prepared.key_kind, key, as_of_text
    )
    if summary.assigned == 0:
        counts = ", ".join(f"{r}: {c:,}" for r, c in summary.excluded.items() if c)
        raise RecipientsError(
            f"{source}: nobody to assign ({n:,} rows; excluded — {counts or 'no rows at all'}). "
            "Check the audience (segments, filters) and the consent / suppression columns in "
            "the spec"
        )
    phase("tables")
    return AssignmentResult(assignment, exclusions, summary, spec, emails, phase.timings)


class _Phases:
    """Wall seconds of each phase of an assignment: calling it closes the phase just run."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._clock
        self._clock = now


def _drop_later_duplicates(
    reason: np.ndarray, eligible: np.ndarray, eligible_keys: pa.Array, top: np.ndarray
) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """The eligible rows kept, their hashes and keys, once later rows of a key are excluded.

    Marks those rows in ``reason``; returns the inputs themselves when there is no duplicate.
    """
    duplicate = later_duplicates(eligible_keys, top)
    if not duplicate.any():
        return eligible, top, eligible_keys
    reason[eligible[duplicate]] = REASONS.index(ExclusionReason.DUPLICATE_KEY) + 1
    return eligible[~duplicate], top[~duplicate], eligible_keys.filter(pa.array(~duplicate))


def _assignment_frame(
    spec: ExperimentSpec,
    keys: pa.Array,
    bucket: np.ndarray,
    group_code: np.ndarray,
    segment_code: np.ndarray,
) -> pd.DataFrame:
    """The :data:`ASSIGNMENT_COLUMNS` of the assigned rows."""
    # Categoricals: a few distinct values over millions of rows, written as Parquet dictionaries.
    constant = np.zeros(len(bucket), np.int8)
    return pd.DataFrame(
        {
            "recipient_key": _strings(keys),
            "variant_id": pd.Categorical.from_codes(group_code, _group_names(spec).tolist()),
            "segment": pd.Categorical.from_codes(segment_code, [s.value for s in SEGMENT_ORDER]),
            "bucket": bucket,
            "salt": pd.Categorical.from_codes(constant, [spec.salt]),
            "spec_sha256": pd.Categorical.from_codes(constant, [spec.sha256()]),
        },
        copy=False,
    )


def _exclusions_frame(reason: np.ndarray, prepared: PreparedRecipients) -> pd.DataFrame:
    """One row per excluded input row: its 1-based row, key, segment label and reason."""
    excluded_rows = np.flatnonzero(reason != 0)
    take = pa.array(excluded_rows)
    return pd.DataFrame(
        {
            "row": excluded_rows + 1,
            "recipient_key": _strings(prepared.keys.take(take)),
            "segment_label": _strings(prepared.labels.take(take)),
            "reason": np.array([r.value for r in REASONS], dtype=object)[reason[excluded_rows] - 1],
        }
    )


def _strings(arr: pa.Array) -> pd.Series:
    """Arrow text as a pandas string column without a copy per value."""
    return pd.Series(pd.arrays.ArrowStringArray(arr))


def _summarise(
    reason: np.ndarray,
    segment_code: np.ndarray,
    group_code: np.ndarray,
    spec: ExperimentSpec,
    source: str,
    key_kind: str,
    key: HashKey | None,
    as_of: str | None,
) -> AssignmentSummary:
    counts = np.bincount(reason, minlength=len(REASONS) + 1)
    excluded = {r.value: int(counts[i + 1]) for i, r in enumerate(REASONS)}
    shares = spec.expected_shares()
    names = _group_names(spec).tolist()
    n_groups = len(names)
    cells = np.bincount(
        segment_code.astype(np.int64) * n_groups + group_code,
        minlength=len(SEGMENT_ORDER) * n_groups,
    ).reshape(len(SEGMENT_ORDER), n_groups)
    per_group = dict(zip(names, cells.sum(axis=0).tolist(), strict=True))
    groups = {g: per_group[g] for g in shares}
    by_segment = {
        segment.value: {g: int(cells[i, names.index(g)]) for g in shares}
        for i, segment in enumerate(SEGMENT_ORDER)
        if cells[i].sum()
    }
    srm = {seg: srm_check(obs, shares).p_value for seg, obs in by_segment.items()}
    if pol.deployed(spec):  # a policy's split is not the weights': no SRM against them
        srm = {}
    hashed = key_kind == "email"
    summary = AssignmentSummary(
        source=source,
        input_rows=len(reason),
        assigned=len(group_code),
        excluded=excluded,
        groups=groups,
        by_segment=dict(sorted(by_segment.items())),
        srm_p_values=dict(sorted(srm.items())),
        salt=spec.salt,
        spec_sha256=spec.sha256(),
        key_source=key.source if hashed and key else None,
        key_fingerprint=key.fingerprint() if hashed and key else None,
        as_of=as_of,
    )
    if summary.input_rows != summary.assigned + sum(excluded.values()):
        raise AssertionError(
            "assignment lost rows: a bug in loopexp.assignment.assign, please report it"
        )
    return summary


def _assignment_table(assignment: pd.DataFrame) -> pa.Table:
    """The assignment as Arrow (the Parquet contract): text columns, dictionary-encoded or not."""
    columns = {}
    for name in ASSIGNMENT_COLUMNS:
        arr = pa.array(assignment[name])
        if name in ("bucket", "propensity"):
            arr = arr.cast(pa.float64())
        elif name == "explored":
            arr = arr.cast(pa.bool_())
        elif not pa.types.is_dictionary(arr.type) and arr.type != pa.string():
            arr = arr.cast(pa.string())
        columns[name] = arr
    return pa.table(columns)
