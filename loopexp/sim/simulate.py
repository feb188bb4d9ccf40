"""Synthetic campaigns with known true effects, written as canonical events.

The simulator is how loopexp checks itself: a campaign whose truth is known (which variant lifts
clicks by how much, which one drives unsubscribes) must lead the loop to the right decision, and an
A/A campaign to no winner. Rates per lifecycle segment are typical of newsletter programmes; about
half of recipients read mail in Apple Mail with Privacy Protection (machine opens on delivery) and a
few sit behind corporate link scanners (bot clicks seconds after delivery).

Two options model lifecycle flows and what was known before the send:

- continuous enrolment (``enrolment_days``): recipients enter the flow evenly over that many days
  and each is mailed when they enter, so events arrive with a delay after each recipient's own
  send; :meth:`SimulatedCampaign.as_of` cuts the campaign at a look (what a daily cron sees);
- a persistent engagement level (``pre_period_days``): each recipient's open and click
  probabilities are scaled by their own level (Gamma, mean 1), and their opens and clicks in the
  pre-period (one mail a week) are recorded in ``covariates`` — so the pre-period predicts who
  clicks, as e-mail history does, and regression adjustment has something to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopexp.assignment.assign import HOLDOUT, assign
from loopexp.design.parts import Segment
from loopexp.design.spec import ExperimentSpec
from loopexp.events.schema import EVENT_SCHEMA
from loopexp.learn.sendtime import send_slots


@dataclass(frozen=True)
class SegmentProfile:
    """Baseline probabilities of one lifecycle segment (control variant)."""

    share: float
    hard_bounce: float
    soft_bounce: float
    open: float
    click_given_open: float
    order_given_click: float
    unsubscribe: float
    complaint: float = 0.0002
    organic_order: float = 0.002


SEGMENT_PROFILES: dict[Segment, SegmentProfile] = {
    Segment.PROSPECT: SegmentProfile(0.30, 0.030, 0.020, 0.18, 0.10, 0.03, 0.0040),
    Segment.NEW_CUSTOMER: SegmentProfile(0.15, 0.005, 0.010, 0.32, 0.16, 0.08, 0.0020),
    Segment.EXISTING_CUSTOMER: SegmentProfile(0.35, 0.003, 0.008, 0.36, 0.18, 0.10, 0.0015),
    Segment.INACTIVE: SegmentProfile(0.20, 0.040, 0.030, 0.07, 0.08, 0.02, 0.0060),
}

APPLE_MPP_SHARE = 0.45
SCANNER_SHARE = 0.03
LINKS = ("https://shop.example/new", "https://shop.example/sale", "https://shop.example/account")
#: Which link a human click goes to, in tenths: new 5, sale 4, account 1 (the hardly-clicked one
#: the per-link distribution should reveal). Indexed by one draw of integers(0, 10).
LINK_OF_TENTH = np.array([0] * 5 + [1] * 4 + [2], dtype=np.intp)


@dataclass(frozen=True)
class TrueEffects:
    """True relative effects per variant, as multipliers of the control's probability (1 = none)."""

    open: dict[str, float] = field(default_factory=dict)
    click_given_open: dict[str, float] = field(default_factory=dict)
    unsubscribe: dict[str, float] = field(default_factory=dict)
    slot_open: dict[str, dict[str, float]] = field(default_factory=dict)
    """Send-time effects: segment → send slot (HH:MM) → open multiplier (see
    loopexp.learn.sendtime)."""
    segment_click: dict[str, dict[str, float]] = field(default_factory=dict)
    """Heterogeneous effects (issue 27): segment → variant → clicks/open multiplier, on top of
    ``click_given_open`` (a winner that flips by segment is what a per-recipient policy learns)."""

    def describe(self) -> str:
        """The effects in words, e.g. ``personal: opens ×1.15; urgency: unsubscribes ×1.9``."""
        names = {"open": "opens", "click_given_open": "clicks/open", "unsubscribe": "unsubscribes"}
        per_variant: dict[str, list[str]] = {}
        for kind, label in names.items():
            for variant, factor in getattr(self, kind).items():
                per_variant.setdefault(variant, []).append(f"{label} ×{factor:g}")
        for segment, by_variant in self.segment_click.items():  # issue 27
            for variant, factor in by_variant.items():
                per_variant.setdefault(variant, []).append(f"clicks/open ×{factor:g} ({segment})")
        for segment, slots in self.slot_open.items():
            best = max(slots, key=slots.__getitem__)
            per_variant.setdefault(f"send time ({segment})", []).append(f"best at {best}")
        if not per_variant:
            return "no true difference between variants (A/A)"
        return "; ".join(f"{v}: {', '.join(parts)}" for v, parts in per_variant.items())

    def multiplier(self, kind: str, variant: np.ndarray) -> np.ndarray:
        """Per-recipient multiplier of ``kind`` for the given variant labels."""
        table: dict[str, float] = getattr(self, kind)
        return np.array([table.get(v, 1.0) for v in variant], dtype=float)

    def segment_multiplier(self, segment: np.ndarray, variant: np.ndarray) -> np.ndarray:
        """Per-recipient clicks/open multiplier of :attr:`segment_click` (1 where none)."""
        if not self.segment_click:
            return np.ones(len(variant))
        table = self.segment_click
        pairs = zip(segment, variant, strict=True)
        return np.array([table.get(s, {}).get(v, 1.0) for s, v in pairs], dtype=float)


#: The demo campaign's truth: "personal" lifts opens (and so clicks) by ~20%; "urgency" lifts opens
#: a little but nearly doubles unsubscribes, which the guardrail must catch.
DEMO_EFFECTS = TrueEffects(
    open={"personal": 1.15, "urgency": 1.04},
    click_given_open={"personal": 1.05},
    unsubscribe={"urgency": 1.9},
)


@dataclass
class SimulatedCampaign:
    """A simulated campaign: recipients, their assignment, the events, and the truth behind them."""

    recipients: pd.DataFrame
    assignment: pd.DataFrame
    events: pd.DataFrame
    effects: TrueEffects
    covariates: pd.DataFrame | None = None
    """Pre-period opens and clicks per recipient (``recipient_key, pre_opens, pre_clicks``)."""

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write events (Parquet, canonical schema) and assignment (Parquet); return both paths.

        Pre-period covariates, when simulated, go to ``covariates.parquet`` beside them.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        events_path = folder / "events.parquet"
        assignment_path = folder / "assignment.parquet"
        write_events(self.events, events_path)
        self.assignment.to_parquet(assignment_path, index=False)
        if self.covariates is not None:
            self.covariates.to_parquet(folder / "covariates.parquet", index=False)
        return events_path, assignment_path

    def as_of(self, cutoff: datetime | pd.Timestamp) -> SimulatedCampaign:
        """The campaign as a look at ``cutoff`` sees it: recipients enrolled and events until then.

        Needs an ``enrolled_at`` column on the assignment (continuous enrolment); a one-off send
        is cut on events only.
        """
        cutoff = pd.Timestamp(cutoff)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        assignment = self.assignment
        if "enrolled_at" in assignment:
            assignment = assignment[assignment["enrolled_at"] <= cutoff].reset_index(drop=True)
        keys = set(assignment["recipient_key"])
        events = self.events[
            (self.events["ts"] <= cutoff) & self.events["recipient_key"].isin(keys)
        ].reset_index(drop=True)
        covariates = self.covariates
        if covariates is not None:
            covariates = covariates[covariates["recipient_key"].isin(keys)].reset_index(drop=True)
        recipients = self.recipients[self.recipients["recipient_key"].isin(keys)]
        return SimulatedCampaign(
            recipients.reset_index(drop=True), assignment, events, self.effects, covariates
        )


def make_recipients(n: int, seed: int = 0) -> pd.DataFrame:
    """A recipient list of ``n`` people across the four lifecycle segments."""
    rng = np.random.default_rng(seed)
    segments = list(SEGMENT_PROFILES)
    shares = np.array([SEGMENT_PROFILES[s].share for s in segments])
    seg = rng.choice(np.array([s.value for s in segments], dtype=object), size=n, p=shares)
    return pd.DataFrame(
        {
            "recipient_key": [f"rcp-{seed:04d}-{i:08d}" for i in range(n)],
            "segment": seg,
            "apple_mpp": rng.random(n) < APPLE_MPP_SHARE,
            "link_scanner": rng.random(n) < SCANNER_SHARE,
        }
    )


def simulate_campaign(
    spec: ExperimentSpec,
    n_recipients: int,
    effects: TrueEffects | None = None,
    seed: int = 0,
    send_at: datetime | None = None,
    enrolment_days: int | None = None,
    pre_period_days: int = 0,
    engagement_shape: float = 0.6,
) -> SimulatedCampaign:
    """Simulate a send of ``spec`` to ``n_recipients`` people with the given true effects.

    Args:
        spec: the experiment.
        n_recipients: people on the list (or entering the flow).
        effects: the true effects (default: none, an A/A test).
        seed: numpy seed; the same arguments give the same campaign.
        send_at: the send (or, with enrolment, the first entry) time, UTC.
        enrolment_days: recipients enter evenly over this many days, each mailed on entry
            (continuous enrolment); ``None`` for one send to everyone.
        pre_period_days: when > 0, recipients have a persistent engagement level and a pre-period
            of this many days (one mail a week) whose opens and clicks are in ``covariates``.
        engagement_shape: Gamma shape of the engagement level (mean 1; smaller = more spread).
    """
    effects = effects or TrueEffects()
    recipients = make_recipients(n_recipients, seed)
    assignment = assign(recipients, spec)
    people = assignment.merge(
        recipients[["recipient_key", "apple_mpp", "link_scanner"]], on="recipient_key"
    )
    if spec.send_time is not None or spec.test_type == "send_time":  # send time (issue 18)
        people["slot"] = send_slots(people, spec)["slot"].to_numpy()
    n = len(people)
    start = pd.Timestamp(send_at or DEFAULT_SEND_AT)
    offset = None
    if enrolment_days:
        entry = np.random.default_rng(seed + 3).uniform(0, enrolment_days * 86400, n)
        offset = entry
        assignment = assignment.assign(
            enrolled_at=(start + pd.to_timedelta(entry, unit="s")).floor("us")
        )
    engagement = covariates = None
    if pre_period_days > 0:
        engagement, covariates = _engagement(people, pre_period_days, engagement_shape, seed + 2)
    events = _simulate_events(
        people, spec, effects, np.random.default_rng(seed + 1), start, offset, engagement
    )
    return SimulatedCampaign(recipients, assignment, events, effects, covariates)


DEFAULT_SEND_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _engagement(
    people: pd.DataFrame, pre_period_days: int, shape: float, seed: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Persistent engagement levels and the pre-period opens and clicks they produced."""
    rng = np.random.default_rng(seed)
    seg = people["segment"].to_numpy(dtype=object)
    level = rng.gamma(shape, 1.0 / shape, len(people))
    mails = max(1, pre_period_days // 7)
    p_open = np.clip(_profile_array(seg, "open") * level, 0, 0.98)
    p_click = np.clip(_profile_array(seg, "click_given_open") * level, 0, 0.98)
    opens = rng.binomial(mails, p_open)
    clicks = rng.binomial(opens, p_click)
    covariates = pd.DataFrame(
        {
            "recipient_key": people["recipient_key"].to_numpy(),
            "pre_opens": opens,
            "pre_clicks": clicks,
        }
    )
    return level, covariates


def write_events(events: pd.DataFrame, path: str | Path) -> Path:
    """Write an event DataFrame as Parquet with the canonical schema."""
    table = pa.Table.from_pandas(events, schema=EVENT_SCHEMA, preserve_index=False)
    pq.write_table(table, path)
    return Path(path)


def _profile_array(segments: np.ndarray, attr: str) -> np.ndarray:
    lookup = {s.value: getattr(p, attr) for s, p in SEGMENT_PROFILES.items()}
    return np.array([lookup[s] for s in segments], dtype=float)


class _Emitter:
    """Collects simulated events: rows of ``people`` picked by a mask, at seconds after the send."""

    def __init__(self, people: pd.DataFrame, send_ts: pd.Timestamp, offset: np.ndarray | None):
        self.key = people["recipient_key"].to_numpy(dtype=object)
        self.variant = people["variant_id"].to_numpy(dtype=object)
        self.send_ts = send_ts
        self.offset = offset
        self.parts: list[pd.DataFrame] = []

    def __call__(self, mask: np.ndarray, event_type: str, ts: np.ndarray, **cols: object) -> None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        seconds = ts[idx] if self.offset is None else ts[idx] + self.offset[idx]
        frame = {
            "event_type": event_type,
            "ts": self.send_ts + pd.to_timedelta(seconds, unit="s"),
            "recipient_key": self.key[idx],
            "variant_id": self.variant[idx],
        }
        for name, value in cols.items():
            frame[name] = value[idx] if isinstance(value, np.ndarray) else value
        self.parts.append(pd.DataFrame(frame))


def _simulate_events(
    people: pd.DataFrame,
    spec: ExperimentSpec,
    effects: TrueEffects,
    rng: np.random.Generator,
    send_ts: pd.Timestamp,
    offset: np.ndarray | None = None,
    engagement: np.ndarray | None = None,
) -> pd.DataFrame:
    seg = people["segment"].to_numpy(dtype=object)
    n = len(people)
    # Send-time addition (issue 18): each recipient is mailed at their slot (the base send is the
    # day's reference time), every delay runs from that send, and the slot multiplies the open
    # probability.
    slot = people["slot"].to_numpy(dtype=object) if "slot" in people else None
    if slot is not None:
        to_slot = _slot_offsets(slot, send_ts)
        offset = to_slot if offset is None else offset + to_slot
    emit = _Emitter(people, send_ts, offset)
    delivered, t_delivered = _deliver(emit, people, seg, rng)
    level = np.ones(n) if engagement is None else engagement
    at_slot = np.ones(n)  # send-time effect on opens only (issue 18)
    if slot is not None and effects.slot_open:
        at_slot = np.array(
            [effects.slot_open.get(g, {}).get(t, 1.0) for g, t in zip(seg, slot, strict=True)]
        )
    clicked, t_click = _engage(emit, seg, effects, rng, delivered, t_delivered, level, at_slot)
    _scan_links(emit, people, delivered, t_delivered)
    _order_and_leave(emit, seg, effects, rng, delivered, t_delivered, clicked, t_click)
    return _event_frame(emit.parts, spec)


def _deliver(
    emit: _Emitter, people: pd.DataFrame, seg: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sends, bounces, deliveries and Apple MPP's machine opens; (delivered, its seconds)."""
    n = len(people)
    mailed = emit.variant != HOLDOUT
    emit(mailed, "send", np.zeros(n))
    u = rng.random(n)
    hard = mailed & (u < _profile_array(seg, "hard_bounce"))
    soft = (
        mailed
        & ~hard
        & (u < _profile_array(seg, "hard_bounce") + _profile_array(seg, "soft_bounce"))
    )
    delivered = mailed & ~hard & ~soft
    t_delivered = rng.uniform(1, 300, n)
    emit(hard, "bounce_hard", t_delivered, bounce_class="invalid_recipient")
    emit(soft, "bounce_soft", t_delivered, bounce_class="mailbox_full")
    emit(delivered, "delivered", t_delivered)

    # Apple Mail Privacy Protection fetches the message (a "machine open") soon after delivery.
    mpp = people["apple_mpp"].to_numpy()
    machine = delivered & mpp & (rng.random(n) < 0.97)
    emit(
        machine,
        "open",
        t_delivered + rng.uniform(30, 900, n),
        is_machine_open=True,
        user_agent="Mozilla/5.0",
        ip="17.58.0.1",
    )
    return delivered, t_delivered


def _engage(
    emit: _Emitter,
    seg: np.ndarray,
    effects: TrueEffects,
    rng: np.random.Generator,
    delivered: np.ndarray,
    t_delivered: np.ndarray,
    level: np.ndarray,
    at_slot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Human opens and clicks (``level``: engagement; ``at_slot``: the slot's effect on opens).

    Returns (clicked, the click's seconds after the send).
    """
    n, variant = len(seg), emit.variant
    p_open = np.clip(
        _profile_array(seg, "open") * effects.multiplier("open", variant) * level * at_slot,
        0,
        0.98,
    )
    opened = delivered & (rng.random(n) < p_open)
    t_open = t_delivered + rng.exponential(6 * 3600, n)
    emit(opened, "open", t_open, is_machine_open=False)
    reopened = opened & (rng.random(n) < 0.3)
    emit(reopened, "open", t_open + rng.exponential(3600, n), is_machine_open=False)

    p_click = np.clip(
        _profile_array(seg, "click_given_open")
        * effects.multiplier("click_given_open", variant)
        * effects.segment_multiplier(seg, variant)
        * level,
        0,
        0.98,
    )
    clicked = opened & (rng.random(n) < p_click)
    t_click = t_open + rng.exponential(120, n)
    link = np.array(LINKS, dtype=object)[LINK_OF_TENTH[rng.integers(0, 10, n)]]
    emit(clicked, "click", t_click, url=link, is_bot_click=False)
    emit(clicked & (rng.random(n) < 0.25), "click", t_click + 60, url=link, is_bot_click=False)
    return clicked, t_click


def _scan_links(
    emit: _Emitter, people: pd.DataFrame, delivered: np.ndarray, t_delivered: np.ndarray
) -> None:
    """Corporate link scanners follow every link within seconds of delivery."""
    scanner = delivered & people["link_scanner"].to_numpy()
    for i, url in enumerate(LINKS):
        emit(
            scanner,
            "click",
            t_delivered + 2 + i,
            url=url,
            is_bot_click=True,
            bot_reason="link scanner: clicked within seconds of delivery",
        )


def _order_and_leave(
    emit: _Emitter,
    seg: np.ndarray,
    effects: TrueEffects,
    rng: np.random.Generator,
    delivered: np.ndarray,
    t_delivered: np.ndarray,
    clicked: np.ndarray,
    t_click: np.ndarray,
) -> None:
    """Orders (after a click, or organic), unsubscribes and complaints."""
    n = len(seg)
    revenue = np.round(rng.lognormal(4.0, 0.6, n), 2)
    ordered = clicked & (rng.random(n) < _profile_array(seg, "order_given_click"))
    organic = ~ordered & (rng.random(n) < _profile_array(seg, "organic_order"))
    t_order = np.where(ordered, t_click + rng.exponential(3600, n), rng.uniform(0, 14 * 86400, n))
    emit(ordered | organic, "order", t_order, revenue=revenue, currency="USD")

    p_unsub = _profile_array(seg, "unsubscribe") * effects.multiplier("unsubscribe", emit.variant)
    unsub = delivered & (rng.random(n) < p_unsub)
    emit(unsub, "unsubscribe", t_delivered + rng.exponential(8 * 3600, n))
    emit(
        delivered & (rng.random(n) < _profile_array(seg, "complaint")),
        "complaint",
        t_delivered + rng.exponential(8 * 3600, n),
    )


def _event_frame(parts: list[pd.DataFrame], spec: ExperimentSpec) -> pd.DataFrame:
    """The simulated events in the canonical schema, in time order, with ids."""
    events = pd.concat(parts, ignore_index=True)
    events = events.sort_values(["ts", "recipient_key"], kind="stable", ignore_index=True)
    events["event_id"] = [f"sim-{i:09d}" for i in range(len(events))]
    events["provider"] = "simulated"
    events["message_id"] = "msg-" + events["recipient_key"]
    events["campaign_id"] = spec.campaign
    for name in EVENT_SCHEMA.names:
        if name not in events:
            events[name] = None
    events["ts"] = events["ts"].dt.tz_convert("UTC").dt.floor("us")
    return events[EVENT_SCHEMA.names]


def _slot_offsets(slot: np.ndarray, send_ts: pd.Timestamp) -> np.ndarray:
    """Seconds from the base send time to each recipient's slot (HH:MM, same day)."""
    base = send_ts.hour * 3600 + send_ts.minute * 60
    seconds = {s: int(s[:2]) * 3600 + int(s[3:5]) * 60 - base for s in set(slot) if s}
    return np.array([seconds.get(s, 0) for s in slot], dtype=float)
