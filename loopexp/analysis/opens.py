"""Open effects that survive Apple Mail Privacy Protection (issue 28).

Apple's proxy fetches every image, so a proxy reader's human open is invisible and ``open_rate``
(human opens only) is diluted by every such reader. Filtering on each open's machine flag would
condition on something that happened after the mail; instead each recipient's *reader class* is
fixed **before** the send from earlier campaigns (:mod:`loopexp.metrics.readers`):

- ``non_proxy``: a human open was seen before: their opens are visible, a valid pre-treatment
  subgroup whose human-open effect is reported with a delta-method CI;
- ``proxy``: only machine opens seen; ``unknown``: no open seen.

Also reported: the whole-audience effect on human opens (an ITT outcome, biased toward 0), the
share of opens that are machine opens per variant, and worst-case (Manski) bounds on the
whole-audience effect on *true* human opens. Assumption of the bounds: a recipient with a human
open in this send read it; one with no open at all did not (the proxy fires on delivery, so no
open means no proxy either); one with only machine opens may or may not have read it (the proxy
hides it), so their outcome lies in [0, 1]. No effect-homogeneity is assumed: the bounds are wide
when many recipients are machine-only, which is the honest answer (reference/mpp.md, 3.3 d).

Lee (2009) bounds (:mod:`loopexp.stats.lee`), narrower, under two more assumptions. A recipient's
outcome is *visible* in this send unless they have only machine opens (human open: read; no open
at all: did not read). (1) Monotone selection: the challenger changes visibility in one direction
only, for everyone. Visibility is mostly the latent, pre-treatment reader type (Apple's proxy
fetches the images whatever the mail says), so the trimming share is about 0; what moves it is a
non-reader's scanner hit becoming a human open when they read (same direction for all when the
challenger raises reading) or a variant whose images the proxy fetches differently. Under (1)
the Lee bounds contain the effect among the always-visible recipients: valid for them, whatever
the proxy readers do. (2) For the whole audience: the masked (machine-only) recipients' reading
responds to the challenger as the always-visible recipients' does (the same difference in
points; the relative bounds, the same lift). (2) cannot be tested from the data: when Apple
readers may react differently, only the worst-case bounds hold, and the report says so.
"""

from __future__ import annotations

import glob
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from loopexp.core.errors import InputError
from loopexp.stats.lee import LeeBounds, lee_bounds_binary
from loopexp.stats.proportion import compare_proportions

if TYPE_CHECKING:
    from loopexp.design.spec import ExperimentSpec

READER_CLASSES = ("non_proxy", "proxy", "unknown")
OPENS_COLUMNS = ("variant", "reader_class", "human_opens", "machine_opens")


@dataclass(frozen=True)
class OpenEffect:
    """A challenger's human-open effect versus control in one group of recipients."""

    n: int
    control_rate: float
    treatment_rate: float
    rel_lift: float
    rel_ci_low: float
    rel_ci_high: float


@dataclass(frozen=True)
class OpenBounds:
    """Worst-case bounds on the whole-audience true human-open difference and relative lift."""

    diff_low: float
    diff_high: float
    rel_low: float
    rel_high: float
    masked_share: float


@dataclass(frozen=True)
class ChallengerOpens:
    """Everything the opens section says about one challenger."""

    variant: str
    non_proxy: OpenEffect | None
    whole_audience: OpenEffect | None
    bounds: OpenBounds | None
    lee: LeeBounds | None = None
    """Lee bounds on the human-open effect (module doc: valid among the always-visible under
    monotone selection; for the whole audience only if masked readers respond alike)."""


@dataclass(frozen=True)
class OpensAnalysis:
    """Opens after MPP: per challenger effects, machine-open share and reader mix per variant."""

    control: str
    challengers: list[ChallengerOpens]
    machine_open_share: dict[str, float | None]
    reader_share: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        """JSON-ready form (NaN left to the caller's encoder)."""
        return asdict(self)


def _effect(frame: pd.DataFrame, variant: str, control: str, alpha: float) -> OpenEffect | None:
    t = frame[frame["variant"] == variant]
    c = frame[frame["variant"] == control]
    if len(t) == 0 or len(c) == 0:
        return None  # no recipients on one side: no comparison, never "no difference"
    yt, yc = int((t["human_opens"] > 0).sum()), int((c["human_opens"] > 0).sum())
    if yc == 0 or yt + yc == len(t) + len(c):
        return (
            None  # no control opens (lift undefined) or everyone opened: no variance, no evidence
        )
    e = compare_proportions(yt, len(t), yc, len(c), alpha)
    return OpenEffect(
        n=len(t) + len(c),
        control_rate=e.control_value,
        treatment_rate=e.treatment_value,
        rel_lift=e.rel_lift,
        rel_ci_low=e.rel_ci_low,
        rel_ci_high=e.rel_ci_high,
    )


def _rate_range(arm: pd.DataFrame) -> tuple[float, float]:
    human = arm["human_opens"] > 0
    masked = ~human & (arm["machine_opens"] > 0)
    n = len(arm)
    return float(human.sum()) / n, float((human | masked).sum()) / n


def worst_case_bounds(frame: pd.DataFrame, variant: str, control: str) -> OpenBounds | None:
    """Manski bounds on the true human-open rate difference ``variant - control`` (module doc)."""
    t = frame[frame["variant"] == variant]
    c = frame[frame["variant"] == control]
    if len(t) == 0 or len(c) == 0:
        return None
    t_lo, t_hi = _rate_range(t)
    c_lo, c_hi = _rate_range(c)
    both = pd.concat([t, c])
    masked = float(((both["human_opens"] <= 0) & (both["machine_opens"] > 0)).mean())
    rel_low = t_lo / c_hi - 1 if c_hi > 0 else float("nan")
    rel_high = t_hi / c_lo - 1 if c_lo > 0 else float("inf")
    return OpenBounds(t_lo - c_hi, t_hi - c_lo, rel_low, rel_high, masked)


def lee_bounds(
    frame: pd.DataFrame, variant: str, control: str, alpha: float = 0.05
) -> LeeBounds | None:
    """Lee bounds on the human-open difference ``variant - control`` (module doc).

    Visible: a human open (read) or no open at all (not read); machine-only recipients are the
    unselected ones whose reading the proxy hides.
    """
    counts = []
    for arm in (frame[frame["variant"] == variant], frame[frame["variant"] == control]):
        human = arm["human_opens"] > 0
        visible = human | (arm["machine_opens"] <= 0)
        counts += [int(human.sum()), int(visible.sum()), len(arm)]
    return lee_bounds_binary(*counts, alpha=alpha)


def machine_open_share(frame: pd.DataFrame) -> dict[str, float | None]:
    """Per variant, machine opens / all opens (``None`` without any open)."""
    out: dict[str, float | None] = {}
    for variant, arm in frame.groupby("variant", sort=True):
        total = float(arm["human_opens"].sum() + arm["machine_opens"].sum())
        out[str(variant)] = float(arm["machine_opens"].sum()) / total if total else None
    return out


def check_opens_frame(frame: pd.DataFrame) -> None:
    """Refuse a frame without the columns or with an unknown reader class, saying what to fix."""
    missing = [c for c in OPENS_COLUMNS if c not in frame]
    if missing:
        raise InputError(f"opens table lacks columns {missing}; needs {list(OPENS_COLUMNS)}")
    bad = sorted(set(frame["reader_class"].astype(str)) - set(READER_CLASSES))
    if bad:
        raise InputError(f"opens table: reader_class {bad} unknown; use {list(READER_CLASSES)}")


def analyze_opens(frame: pd.DataFrame, control: str, alpha: float = 0.05) -> OpensAnalysis:
    """Opens after MPP from one row per assigned recipient (:data:`OPENS_COLUMNS`).

    ``human_opens`` / ``machine_opens`` count this send's opens; ``reader_class`` is fixed before
    the send. A side without recipients (or without control opens) gives ``None``, never a zero.
    """
    check_opens_frame(frame)
    frame = frame.assign(variant=frame["variant"].astype(str))
    variants = sorted(set(frame["variant"]) - {control})
    non_proxy = frame[frame["reader_class"] == "non_proxy"]
    challengers = [
        ChallengerOpens(
            variant=v,
            non_proxy=_effect(non_proxy, v, control, alpha),
            whole_audience=_effect(frame, v, control, alpha),
            bounds=worst_case_bounds(frame, v, control),
            lee=lee_bounds(frame, v, control, alpha),
        )
        for v in variants
    ]
    mix = {
        str(v): {k: float((arm["reader_class"] == k).mean()) for k in READER_CLASSES}
        for v, arm in frame.groupby("variant", sort=True)
    }
    return OpensAnalysis(control, challengers, machine_open_share(frame), mix)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf: an undefined or unbounded number is null
    return value


def opens_section(frame: pd.DataFrame, control: str, alpha: float = 0.05) -> dict[str, Any]:
    """The ``opens`` section of ``results.json`` (schema "1", optional): :func:`analyze_opens`.

    Keys: ``control``, ``challengers`` (each ``variant``, ``non_proxy`` and ``whole_audience``
    with ``n``, rates, ``rel_lift``, ``rel_ci_low``, ``rel_ci_high``; ``bounds`` with
    ``diff_low``, ``diff_high``, ``rel_low``, ``rel_high``, ``masked_share``; ``lee`` with
    the Lee bounds ``diff_low``, ``diff_high``, ``rel_low``, ``rel_high``, their ``ci_low``,
    ``ci_high``, ``rel_ci_low``, ``rel_ci_high``, ``trimmed_share`` and ``trimmed_arm``), the
    ``machine_open_share`` and ``reader_share`` per variant. Null where nothing could be compared.
    """
    return _json_ready(analyze_opens(frame, control, alpha).to_dict())


def spec_opens(
    spec: ExperimentSpec,
    events: str | Path,
    assignment: str | Path,
    spec_path: str | Path | None = None,
) -> dict[str, Any]:
    """The opens section for a spec naming ``data.history`` (relative to ``spec_path``'s folder).

    Adds ``machine_share_jump``: a sentence when the machine-open share moved by
    :data:`SHARE_JUMP` or more since the history's last campaign (the MPP-share monitor), else null.
    """
    from loopexp.metrics.readers import (  # noqa: PLC0415 (DuckDB only when asked)
        first_send,
        machine_share_by_campaign,
        opens_table,
    )

    history = Path(spec.data.history or "").expanduser()
    if spec_path is not None and not history.is_absolute():
        history = (Path(spec_path).parent / history).resolve()
    if not glob.glob(str(history)):
        raise InputError(
            f"{history}: the event history named in the spec (data.history "
            f"{spec.data.history!r}, relative to the spec's folder) matches no file; fix the path "
            "or remove data.history to read opens without the MPP section"
        )
    limit = spec.data.memory_limit
    before = first_send(events, limit)
    frame = opens_table(events, assignment, str(history), before, limit)
    section = opens_section(frame, spec.control, spec.decision.alpha)
    if before is not None:
        earlier = machine_share_by_campaign(str(history), before, limit)
        section["machine_share_jump"] = share_jump(earlier, frame)
    return section


#: A change of the machine-open share this large (in points) between sends is flagged. Rule of
#: thumb, not a test: opens are clustered per recipient, and MPP moved unique opens by 8-15
#: points for most senders (SparkPost, reference/mpp.md 3.1).
SHARE_JUMP = 0.10


def share_jump(earlier: pd.DataFrame, frame: pd.DataFrame) -> str | None:
    """A sentence when this send's machine-open share differs from the last earlier campaign's."""
    earlier = earlier[earlier["opens"] > 0]
    opens = float(frame["human_opens"].sum() + frame["machine_opens"].sum())
    if earlier.empty or opens == 0:
        return None
    last = earlier.iloc[-1]
    before = float(last["machine_opens"]) / float(last["opens"])
    now = float(frame["machine_opens"].sum()) / opens
    if abs(now - before) < SHARE_JUMP:
        return None
    return (
        f"The share of machine opens moved from {before:.0%} (campaign {last['campaign_id']}) to "
        f"{now:.0%} in this send: open rates are not comparable across it; read clicks."
    )
