"""Send time, learned and not guessed: randomised send slots, analysis per slot and segment.

How a spec expresses it (``send_time:`` in the spec, :class:`SendTimeSettings`):

* a send-time test: ``test_type: send_time`` with one variant per slot (``send_time: "08:00"``);
  the ordinary assignment randomises recipients to slots;
* or slots randomised *beside* any variant test: ``send_time: {slots: [...], explore_share: 1}``;
  a salted hash independent of the variant split puts each recipient in a slot;
* after learning: ``send_time: {slots, windows: {segment: slot}, explore_share: 0.1}``: each
  segment is mailed at its window, and a randomised ``explore_share`` of it (by a salted hash) is
  still spread over all slots, so the loop keeps learning and can notice when the best slot moves.
  Only the randomised (explored) recipients are analysed for send time: the window recipients were
  not randomised, so comparing them would be confounded.

Analysis (:func:`analyze_send_time`): per lifecycle segment and slot, the primary metric's rate
with a Wilson interval; per segment, each slot against the segment's current window (the reference)
with the score test and interval of every other comparison (:mod:`loopexp.stats`), Holm-adjusted
across all segments x slots with intervals at the matching levels; and the beta-binomial posterior
chance that each slot is the segment's best (:func:`loopexp.stats.bayes.best_and_loss`). The
recommended window of a segment is its most probably best slot; it is ``confident`` when that slot
also beats the reference after adjustment (or is the reference). Everything works on sufficient
statistics (recipients and successes per segment x slot), so the check over many simulated
campaigns (:mod:`loopexp.learn.sendtime_check`) draws counts, not events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from statsmodels.stats.proportion import proportion_confint

from loopexp.assignment.assign import unit_interval
from loopexp.core.errors import InputError
from loopexp.design.parts import SendTimeSettings, TestType
from loopexp.design.spec import ExperimentSpec
from loopexp.metrics.definitions import HOLDOUT, METRICS
from loopexp.metrics.engine import ALL_SEGMENTS, compute_metrics
from loopexp.stats.bayes import best_and_loss, posteriors
from loopexp.stats.comparison import ScoreProportions
from loopexp.stats.multiplicity import adjust_pvalues, interval_alphas

#: Share of each segment still randomised over all slots once windows are learned.
DEFAULT_EXPLORE_SHARE = 0.1
#: The metric the loop learns send windows from: the open comes right after the send and is far
#: more frequent than a click, so the windows settle in fewer iterations.
LEARNING_METRIC = "open_rate"


class SendTimeError(InputError):
    """The send-time analysis cannot be made as asked (e.g. a spec without slots)."""


def spec_slots(spec: ExperimentSpec) -> list[str]:
    """The send slots of ``spec``: its ``send_time.slots``, or its variants' send times."""
    if spec.send_time is not None:
        return list(spec.send_time.slots)
    if spec.test_type == TestType.SEND_TIME:
        slots = [v.send_time for v in spec.variants]
        if all(slots):
            return list(dict.fromkeys(s for s in slots if s))
    raise SendTimeError(
        f"spec {spec.name!r} has no send slots: add `send_time: {{slots: [...]}}`, or make it a "
        "`test_type: send_time` test with a `send_time` on every variant"
    )


def send_slots(assignment: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """Each assigned recipient's send slot, and whether it was randomised (``explore``).

    ``assignment`` has ``recipient_key``, ``segment`` and ``variant_id``; holdout recipients get no
    slot. The slot hash uses its own salts (``<salt>:send-time-explore``, ``<salt>:send-time-slot``)
    so the slot is independent of the variant.
    """
    keys = assignment["recipient_key"].astype(str).to_numpy(dtype=object)
    variant = assignment["variant_id"].astype(str).to_numpy(dtype=object)
    segment = assignment["segment"].astype(str).to_numpy(dtype=object)
    mailed = variant != HOLDOUT
    if spec.send_time is None:
        slots = spec_slots(spec)
        by_variant = {v.id: v.send_time for v in spec.variants}
        slot = np.array([by_variant.get(v) for v in variant], dtype=object)
        explore = mailed.copy()
    else:
        settings: SendTimeSettings = spec.send_time
        slots = list(settings.slots)
        u_explore = unit_interval(f"{spec.salt}:send-time-explore", keys)
        u_slot = unit_interval(f"{spec.salt}:send-time-slot", keys)
        randomised = np.array(slots, dtype=object)[
            np.minimum((u_slot * len(slots)).astype(int), len(slots) - 1)
        ]
        windows = {str(k): v for k, v in settings.windows.items()}
        window = np.array([windows.get(s, slots[0]) for s in segment], dtype=object)
        explore = mailed & (u_explore < settings.explore_share)
        slot = np.where(explore, randomised, window)
    slot = np.where(mailed, slot, None)
    return pd.DataFrame(
        {
            "recipient_key": keys,
            "segment": segment,
            "variant_id": variant,
            "slot": slot,
            "explore": explore,
        }
    )


def local_send_times(
    slots: pd.DataFrame,
    send_date: date,
    timezones: pd.Series | None = None,
    default_timezone: str = "UTC",
) -> pd.Series:
    """The UTC instant of each recipient's slot on ``send_date`` in their own timezone.

    ``timezones`` (IANA names, indexed like ``slots``) is used where known and valid; the others
    are sent at the slot in ``default_timezone``. Recipients without a slot (holdout) get NaT.
    """
    default = ZoneInfo(default_timezone)
    zones: dict[str, ZoneInfo] = {}

    def zone(name: object) -> ZoneInfo:
        if not isinstance(name, str) or not name:
            return default
        if name not in zones:
            try:
                zones[name] = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                zones[name] = default
        return zones[name]

    tz_values = timezones.to_numpy(dtype=object) if timezones is not None else [None] * len(slots)
    out = []
    for slot, tz in zip(slots["slot"].to_numpy(dtype=object), tz_values, strict=True):
        if not isinstance(slot, str):
            out.append(pd.NaT)
            continue
        local = datetime.combine(send_date, time(int(slot[:2]), int(slot[3:5])), tzinfo=zone(tz))
        out.append(pd.Timestamp(local).tz_convert("UTC"))
    return pd.Series(out, index=slots.index, dtype="datetime64[ns, UTC]")


class SlotResult(BaseModel):
    """One slot in one segment: the primary rate, its chance to be best, and vs the reference."""

    model_config = ConfigDict(frozen=True)

    segment: str
    slot: str
    n: int
    successes: float
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    prob_best: float | None
    reference: str
    rel_lift: float | None = None
    rel_ci_low: float | None = None
    rel_ci_high: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    ci_level: float | None = None


class SegmentWindow(BaseModel):
    """The recommended send window of one segment."""

    model_config = ConfigDict(frozen=True)

    segment: str
    slot: str | None
    """The most probably best slot; None when the segment had no randomised recipient."""
    prob_best: float | None
    reference: str
    confident: bool
    """The slot beats the reference after multiplicity adjustment, or is the reference."""
    reason: str


class SendTimeAnalysis(BaseModel):
    """Slot x segment results and the recommended window per segment."""

    model_config = ConfigDict(frozen=True)

    metric: str
    slots: list[str]
    alpha: float
    correction: str
    results: list[SlotResult]
    windows: list[SegmentWindow]

    def recommended(self) -> dict[str, str]:
        """Segment → recommended slot, for the segments that have one."""
        return {w.segment: w.slot for w in self.windows if w.slot is not None}

    def frame(self) -> pd.DataFrame:
        """The slot x segment results as a DataFrame."""
        return pd.DataFrame([r.model_dump() for r in self.results])


def analyze_send_time(
    counts: pd.DataFrame,
    slots: Sequence[str],
    metric: str = "click_rate",
    alpha: float = 0.05,
    correction: str = "holm",
    reference: Mapping[str, str] | None = None,
    prior: tuple[float, float] = (1.0, 1.0),
    with_intervals: bool = True,
) -> SendTimeAnalysis:
    """Analyse send slots per segment from ``counts`` (``segment, slot, n, successes``).

    ``reference`` maps a segment to the slot every other slot is compared with (its current
    window; default the first slot). ``with_intervals=False`` skips the score intervals (the
    recommendation does not use them; the bench does it thousands of times).
    """
    if METRICS.get(metric) is None or METRICS[metric].kind != "proportion":
        raise SendTimeError(f"send-time analysis needs a proportion metric; got {metric!r}")
    slots = list(slots)
    reference = dict(reference or {})
    cells = {
        (str(r.segment), str(r.slot)): (int(r.n), float(r.successes))
        for r in counts.itertuples(index=False)
    }
    rows: list[dict] = []
    tests: list[tuple[int, ScoreProportions]] = []
    windows = [
        _segment(seg, reference.get(seg, slots[0]), slots, cells, prior, alpha, with_intervals,
                 rows, tests)
        for seg in sorted({seg for seg, _ in cells})
    ]  # fmt: skip
    _adjust(rows, tests, correction, alpha, with_intervals)
    results = [SlotResult(**r) for r in rows]
    return SendTimeAnalysis(
        metric=metric,
        slots=slots,
        alpha=alpha,
        correction=correction,
        results=results,
        windows=[_judged(w, results, alpha) for w in windows],
    )


def _segment(
    seg: str,
    ref: str,
    slots: list[str],
    cells: dict[tuple[str, str], tuple[int, float]],
    prior: tuple[float, float],
    alpha: float,
    with_intervals: bool,
    rows: list[dict],
    tests: list[tuple[int, ScoreProportions]],
) -> SegmentWindow:
    """One segment's most probably best slot (judged once the whole family is adjusted).

    Appends the segment's rows to ``rows`` and its tests against ``ref`` to ``tests``.
    """
    arms = [cells.get((seg, s), (0, 0.0)) for s in slots]
    with_data = [i for i, (n, _) in enumerate(arms) if n > 0]
    probs: dict[int, float] = {}
    if len(with_data) >= 2:
        data = [(arms[i][0], arms[i][1], arms[i][1]) for i in with_data]
        best, _ = best_and_loss(posteriors("proportion", data, prior))
        probs = {i: float(p) for i, p in zip(with_data, best, strict=True)}
    ref_i = slots.index(ref)
    n_ref, x_ref = arms[ref_i]
    for i, s in enumerate(slots):
        n, x = arms[i]
        low = high = None
        if n > 0 and with_intervals:
            low, high = (float(v) for v in proportion_confint(x, n, alpha, method="wilson"))
        rows.append(
            {"segment": seg, "slot": s, "n": n, "successes": x, "rate": x / n if n else None,
             "ci_low": low, "ci_high": high, "prob_best": probs.get(i), "reference": ref}
        )  # fmt: skip
        if i != ref_i and n > 0 and n_ref > 0 and (x > 0 or x_ref > 0):
            tests.append((len(rows) - 1, ScoreProportions(x, n, x_ref, n_ref)))
    if not probs:
        return SegmentWindow(
            segment=seg,
            slot=None,
            prob_best=None,
            reference=ref,
            confident=False,
            reason="fewer than two slots had randomised recipients: no comparison, "
            "the current window stays",
        )
    top = max(probs, key=lambda i: (probs[i], arms[i][1] / arms[i][0]))
    return SegmentWindow(
        segment=seg,
        slot=slots[top],
        prob_best=probs[top],
        reference=ref,
        confident=False,
        reason="",
    )


def _adjust(
    rows: list[dict],
    tests: list[tuple[int, ScoreProportions]],
    correction: str,
    alpha: float,
    with_intervals: bool,
) -> None:
    """One multiplicity family: every slot against its segment's reference, over all segments."""
    p_values = [m.test()[1] for _, m in tests]
    adjusted = adjust_pvalues(p_values, correction) if p_values else []
    levels = interval_alphas(p_values, correction, alpha) if p_values else []
    for (row_i, method), p, p_adj, a in zip(tests, p_values, adjusted, levels, strict=True):
        row = rows[row_i]
        row.update(p_value=float(p), p_value_adjusted=float(p_adj), ci_level=1 - a)
        row["rel_lift"] = method.rel_lift
        if with_intervals:
            iv = method.interval(a)
            row.update(rel_ci_low=_finite(iv.rel_low), rel_ci_high=_finite(iv.rel_high))


def _judged(w: SegmentWindow, results: list[SlotResult], alpha: float) -> SegmentWindow:
    """A segment's window, ``confident`` when it beats the reference after adjustment."""
    if w.slot is None:
        return w
    if w.slot == w.reference:
        confident, reason = True, f"{w.slot} is the most probably best slot and the reference"
    else:
        r = next(r for r in results if (r.segment, r.slot) == (w.segment, w.slot))
        confident = (
            r.p_value_adjusted is not None and r.p_value_adjusted < alpha and (r.rel_lift or 0) > 0
        )
        p_txt = "n/a" if r.p_value_adjusted is None else f"{r.p_value_adjusted:.3g}"
        reason = (
            f"{w.slot} is the most probably best slot (P(best) = {w.prob_best:.0%}); against "
            f"{w.reference}: adjusted p = {p_txt}"
            + ("" if confident else " (not yet conclusive: keep exploring)")
        )
    return w.model_copy(update={"confident": confident, "reason": reason})


def slot_plot(analysis: SendTimeAnalysis) -> Any:
    """Rate per slot in each segment with its interval; the recommended slot filled."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 (plots only when asked)

    frame = analysis.frame()
    segments = sorted(frame["segment"].unique())
    windows = analysis.recommended()
    fig, axes = plt.subplots(1, max(len(segments), 1), figsize=(3 * max(len(segments), 1), 3))
    for ax, seg in zip(np.atleast_1d(axes), segments, strict=False):
        rows = frame[frame["segment"] == seg].set_index("slot").reindex(analysis.slots)
        x = np.arange(len(analysis.slots))
        rate = rows["rate"].astype(float).to_numpy()
        low = rate - rows["ci_low"].astype(float).to_numpy()
        high = rows["ci_high"].astype(float).to_numpy() - rate
        ax.errorbar(x, rate, yerr=[low, high], fmt="o", color="tab:blue")
        if seg in windows:
            i = analysis.slots.index(windows[seg])
            ax.plot([i], [rate[i]], "o", color="tab:orange", markersize=10, label="recommended")
            ax.legend(fontsize=7)
        ax.set_xticks(x, analysis.slots)
        ax.set_title(seg, fontsize=9)
    fig.suptitle(f"{analysis.metric} by send slot and segment", fontsize=10)
    fig.tight_layout()
    return fig


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def slot_counts(
    events: str | Path,
    assignment: str | Path | pd.DataFrame,
    spec: ExperimentSpec,
    metric: str | None = None,
) -> pd.DataFrame:
    """Recipients and successes of ``metric`` per segment x slot, randomised recipients only.

    The metric engine computes them (DuckDB; only sufficient statistics leave it): the assignment
    is handed to it with the slot in place of the variant.
    """
    metric = metric or spec.primary_metric
    frame = assignment if isinstance(assignment, pd.DataFrame) else pd.read_parquet(assignment)
    slots = send_slots(frame, spec)
    randomised = slots[slots["explore"] & slots["slot"].notna()]
    by_slot = pd.DataFrame(
        {
            "recipient_key": randomised["recipient_key"],
            "segment": randomised["segment"],
            "variant_id": randomised["slot"].astype(str),
        }
    )
    table = compute_metrics(str(events), by_slot, [metric])
    rows = [
        {"segment": s.segment, "slot": s.variant_id, "n": s.n, "successes": s.sum}
        for s in table.stats
        if s.metric == metric and s.segment != ALL_SEGMENTS and s.variant_id != HOLDOUT
    ]
    return pd.DataFrame(rows, columns=["segment", "slot", "n", "successes"])


def send_time_from_files(
    events: str | Path,
    assignment: str | Path | pd.DataFrame,
    spec: ExperimentSpec,
    metric: str | None = None,
) -> SendTimeAnalysis:
    """Analyse the send slots of one iteration of ``spec`` from its events and assignment.

    ``metric`` defaults to the spec's primary metric; a proportion metric closer to the send
    (``open_rate``) learns faster when the primary one is rare.
    """
    metric = metric or spec.primary_metric
    counts = slot_counts(events, assignment, spec, metric)
    reference = {str(k): v for k, v in spec.send_time.windows.items()} if spec.send_time else {}
    if spec.send_time is None:  # a send-time test: the control's slot is the reference
        control_slot = next(v.send_time for v in spec.variants if v.id == spec.control)
        reference = {seg: control_slot for seg in counts["segment"].unique()}
    rule = spec.decision
    return analyze_send_time(
        counts,
        spec_slots(spec),
        metric,
        rule.alpha,
        rule.correction,
        reference,
        (rule.prior.a, rule.prior.b),
    )


def next_send_time(
    spec: ExperimentSpec, analysis: SendTimeAnalysis, explore_share: float | None = None
) -> SendTimeSettings:
    """The next iteration's ``send_time``: each segment at its window, a share kept randomised.

    A segment without a window gets its most probably best slot; a segment with one moves only
    when the new slot is shown better than it after adjustment (``confident``), so a noisy
    exploration share does not make the window flip back and forth. A segment without a
    recommendation keeps its current window.
    """
    slots = spec_slots(spec)
    current = {str(k): v for k, v in spec.send_time.windows.items()} if spec.send_time else {}
    windows = dict(current)
    for w in analysis.windows:
        if w.slot is not None and (w.segment not in current or w.confident):
            windows[w.segment] = w.slot
    if explore_share is None:
        explore_share = (
            spec.send_time.explore_share
            if spec.send_time is not None and spec.send_time.explore_share < 1
            else DEFAULT_EXPLORE_SHARE
        )
    return SendTimeSettings(
        slots=slots,
        windows=windows,
        explore_share=explore_share,
        default_timezone=spec.send_time.default_timezone if spec.send_time else "UTC",
        timezone_column=spec.send_time.timezone_column if spec.send_time else None,
    )


__all__ = [
    "DEFAULT_EXPLORE_SHARE",
    "LEARNING_METRIC",
    "SegmentWindow",
    "SendTimeAnalysis",
    "SendTimeError",
    "SlotResult",
    "analyze_send_time",
    "local_send_times",
    "next_send_time",
    "send_slots",
    "send_time_from_files",
    "slot_counts",
    "slot_plot",
    "spec_slots",
]
