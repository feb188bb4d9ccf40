"""Real experiment data shipped with loopexp, for examples, notebooks and reference tests.

The one data set so far is the Hillstrom MineThatData e-mail experiment (Kevin Hillstrom, 2008):
64,000 customers randomised into three arms, ``Mens E-Mail``, ``Womens E-Mail`` and ``No E-Mail``
(the holdout), with visit, conversion and spend tracked for the two weeks after the mailing.
Provenance, column meanings and the published per-arm figures are in ``SOURCES.md`` next to this
file. The file ships gzip-compressed and is checked against a recorded SHA-256 on every load.

- :func:`load_hillstrom`: the raw table, one row per customer, with proper dtypes.
- :func:`hillstrom_outcomes`: the same data as a loopexp outcome table (``recipient_key``,
  ``variant_id``, lifecycle ``segment``, metric columns and the ``history`` covariate).
- :func:`hillstrom_sufficient_stats`: per-arm ``n``, sum and sum of squares of each metric,
  computed in DuckDB, ready for :mod:`loopexp.stats`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from collections.abc import Sequence
from importlib import resources

import duckdb
import pandas as pd

from loopexp.core.errors import StateError
from loopexp.design.parts import Segment
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats

__all__ = [
    "HILLSTROM_ARMS",
    "HILLSTROM_FILE",
    "HILLSTROM_METRICS",
    "HILLSTROM_SHA256",
    "DatasetIntegrityError",
    "hillstrom_outcomes",
    "hillstrom_sufficient_stats",
    "load_hillstrom",
]

#: Packaged file name (inside ``loopexp.sim.datasets``).
HILLSTROM_FILE = "hillstrom.csv.gz"

#: SHA-256 of the *uncompressed* CSV (see ``SOURCES.md``).
HILLSTROM_SHA256 = "00a6a868e05a9ffe7382da51629f6d6dce88c5acfc945e79d314ebc78fd3a2c0"

#: Arm name in the data → loopexp ``variant_id``.
HILLSTROM_ARMS: dict[str, str] = {
    "Mens E-Mail": "mens",
    "Womens E-Mail": "womens",
    "No E-Mail": "no_email",
}

#: Outcome columns measured in the two weeks after the mailing.
HILLSTROM_METRICS: tuple[str, ...] = ("visit", "conversion", "spend")

_HISTORY_SEGMENTS = (
    "1) $0 - $100",
    "2) $100 - $200",
    "3) $200 - $350",
    "4) $350 - $500",
    "5) $500 - $750",
    "6) $750 - $1,000",
    "7) $1,000 +",
)

_DTYPES: dict[str, object] = {
    "recency": "int64",
    "history_segment": pd.CategoricalDtype(_HISTORY_SEGMENTS, ordered=True),
    "history": "float64",
    "mens": "int64",
    "womens": "int64",
    "zip_code": pd.CategoricalDtype(["Urban", "Surburban", "Rural"]),  # "Surburban" sic
    "newbie": "int64",
    "channel": pd.CategoricalDtype(["Phone", "Web", "Multichannel"]),
    "segment": pd.CategoricalDtype(list(HILLSTROM_ARMS)),
    "visit": "int64",
    "conversion": "int64",
    "spend": "float64",
}


class DatasetIntegrityError(StateError):
    """A packaged data file whose content is not the one recorded in ``SOURCES.md``."""


def _verified_bytes(name: str, sha256: str) -> bytes:
    """Decompressed bytes of packaged file ``name``, checked against ``sha256``."""
    resource = resources.files(__name__).joinpath(name)
    raw = gzip.decompress(resource.read_bytes())
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise DatasetIntegrityError(
            f"{name}: SHA-256 of the decompressed data is {actual}, expected {sha256}. "
            "The packaged file is corrupt or was replaced; reinstall loopexp or restore the file "
            "from the source named in loopexp/sim/datasets/SOURCES.md."
        )
    return raw


@functools.cache
def _hillstrom_frame() -> pd.DataFrame:
    raw = _verified_bytes(HILLSTROM_FILE, HILLSTROM_SHA256)
    frame = pd.read_csv(io.BytesIO(raw), dtype=_DTYPES, float_precision="round_trip")
    if list(frame.columns) != list(_DTYPES):
        raise DatasetIntegrityError(f"{HILLSTROM_FILE}: unexpected columns {list(frame.columns)}")
    return frame


def load_hillstrom() -> pd.DataFrame:
    """The Hillstrom MineThatData e-mail experiment, one row per customer (64,000 rows).

    Columns, in the original order: ``recency`` (int), ``history_segment`` (ordered categorical,
    7 buckets), ``history`` (float, last year's spend), ``mens``, ``womens``, ``newbie`` (0/1 ints),
    ``zip_code`` and ``channel`` (categoricals), ``segment`` (categorical, the randomised arm:
    ``Mens E-Mail``, ``Womens E-Mail``, ``No E-Mail``), ``visit`` and ``conversion`` (0/1 ints) and
    ``spend`` (float dollars).

    The file is read once per process and verified against :data:`HILLSTROM_SHA256`; each call
    returns a fresh copy, so callers may modify it.

    Returns:
        The raw table.

    Raises:
        DatasetIntegrityError: if the packaged file does not match the recorded checksum.
    """
    return _hillstrom_frame().copy()


def _check_arms(arms: Sequence[str] | None) -> list[str]:
    if arms is None:
        return list(HILLSTROM_ARMS)
    if isinstance(arms, str):
        arms = [arms]
    unknown = [a for a in arms if a not in HILLSTROM_ARMS]
    if unknown or not arms:
        raise ValueError(
            f"unknown or no Hillstrom arm(s) {unknown}; choose from {list(HILLSTROM_ARMS)}"
        )
    return list(dict.fromkeys(arms))


def hillstrom_outcomes(
    arms: Sequence[str] | None = ("Mens E-Mail", "No E-Mail"),
) -> pd.DataFrame:
    """The Hillstrom data as a loopexp outcome table, one row per recipient.

    Columns:

    - ``recipient_key``: ``hillstrom-NNNNN``, the 0-based row number in the source file.
    - ``variant_id``: the arm as a loopexp id (:data:`HILLSTROM_ARMS`: ``mens``, ``womens``,
      ``no_email``).
    - ``segment``: lifecycle segment, ``new_customer`` when ``newbie == 1``, else
      ``existing_customer``.
    - ``visit``, ``conversion`` (0/1 ints) and ``spend`` (float): the outcomes.
    - ``history``: last year's spend, the pre-period covariate (e.g. for CUPED).

    Args:
        arms: arm names as in the data (keys of :data:`HILLSTROM_ARMS`) to keep, in any order;
            ``None`` keeps all three. The default is the men's mailing against the holdout.

    Returns:
        The outcome table, rows in source-file order.

    Raises:
        ValueError: if an arm name is unknown.
    """
    keep = _check_arms(arms)
    raw = _hillstrom_frame()
    rows = raw[raw["segment"].isin(keep)]
    return pd.DataFrame(
        {
            "recipient_key": [f"hillstrom-{i:05d}" for i in rows.index],
            "variant_id": rows["segment"].map(HILLSTROM_ARMS).astype(str).to_numpy(),
            "segment": (
                rows["newbie"]
                .eq(1)
                .map({True: Segment.NEW_CUSTOMER.value, False: Segment.EXISTING_CUSTOMER.value})
                .to_numpy()
            ),
            "visit": rows["visit"].to_numpy(),
            "conversion": rows["conversion"].to_numpy(),
            "spend": rows["spend"].to_numpy(),
            "history": rows["history"].to_numpy(),
        }
    )


def hillstrom_sufficient_stats(
    arms: Sequence[str] | None = None,
    metrics: Sequence[str] = HILLSTROM_METRICS,
) -> list[GroupStats]:
    """Per-arm sufficient statistics of the Hillstrom outcomes, computed in DuckDB.

    As in :func:`loopexp.metrics.compute_metrics`, only ``n``, ``sum`` and ``sum_sq`` come back,
    one :class:`~loopexp.metrics.engine.GroupStats` per (metric, arm), with ``segment`` set to
    ``"all"``; they feed :func:`loopexp.stats.compare_means` and
    :func:`loopexp.stats.compare_proportions` directly.

    Args:
        arms: arm names to include (keys of :data:`HILLSTROM_ARMS`); ``None`` for all three.
        metrics: outcome columns, a subset of :data:`HILLSTROM_METRICS` (``history``, the
            pre-period covariate, is also accepted).

    Returns:
        Statistics ordered by metric (as given), then arm (as in :data:`HILLSTROM_ARMS`).

    Raises:
        ValueError: if an arm or metric is unknown.
    """
    keep = _check_arms(arms)
    allowed = (*HILLSTROM_METRICS, "history")
    bad = [m for m in metrics if m not in allowed]
    if bad or not metrics:
        raise ValueError(f"unknown or no metric(s) {bad}; choose from {list(allowed)}")
    outcomes = hillstrom_outcomes(keep)
    aggregates = ", ".join(
        f"sum({m})::DOUBLE AS {m}__sum, sum({m}::DOUBLE * {m}::DOUBLE) AS {m}__sum_sq"
        for m in metrics
    )
    with duckdb.connect() as con:
        con.register("outcomes", outcomes)
        frame = con.execute(
            f"SELECT variant_id, count(*) AS n, {aggregates} FROM outcomes GROUP BY variant_id"
        ).df()
    by_variant = frame.set_index("variant_id")
    order = [variant for arm, variant in HILLSTROM_ARMS.items() if arm in keep]
    return [
        GroupStats(
            metric=m,
            variant_id=v,
            segment=ALL_SEGMENTS,
            n=int(by_variant.at[v, "n"]),
            sum=float(by_variant.at[v, f"{m}__sum"]),
            sum_sq=float(by_variant.at[v, f"{m}__sum_sq"]),
        )
        for m in metrics
        for v in order
    ]
