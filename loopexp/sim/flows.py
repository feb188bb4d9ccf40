"""Flow tests with known truth: entries over time, each arm's schedule, conversions by window.

People enter the flow at a steady rate and reach the experiment split on entry. Each arm has a true
probability of converting within the flow's window ``W`` (:class:`FlowTruth.conversion`); a
converter converts either "organically" (spread over the window) or after the arm's last message
(nudged), so an arm that waits longer before its reminder converts *later*, though not less when
its probability is the same. Every conversion time lies within ``W``, so the true W-day rate of
an arm is exactly its ``conversion``: the censoring-aware estimate is judged against it, and the
naive "conversions so far" count shown beside it.

:func:`draw_flow_outcomes` is the lean core (numpy arrays, for calibration by the thousand);
:func:`simulate_flow` walks the spec's steps per recipient and writes canonical events (sends,
deliveries, opens, clicks, unsubscribes, orders, each with ``flow_id`` and ``step_id``) and the
assignment :func:`loopexp.assignment.flow.assign_flow_entries` makes, for ``loopexp run`` and the
demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopexp.assignment.flow import assign_flow_entries
from loopexp.design.flow import FlowSpec
from loopexp.design.spec import ExperimentSpec
from loopexp.events.schema import EVENT_SCHEMA
from loopexp.sim.simulate import make_recipients

DAY = 86400.0
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: The flow columns the simulated events carry beyond the canonical schema's.
FLOW_EVENT_COLUMNS = (("flow_id", pa.string()), ("step_id", pa.string()))


@dataclass(frozen=True)
class FlowTruth:
    """The truth of a simulated flow test.

    ``conversion``: each arm's true probability of converting within the window (an arm not
    named has ``baseline``). ``unsubscribe``: multiplier of the per-message unsubscribe
    probability per arm.
    """

    conversion: dict[str, float] = field(default_factory=dict)
    baseline: float = 0.06
    nudged_share: float = 0.6
    """Share of an arm's converters who convert after its last message (not organically)."""
    open_rate: float = 0.35
    click_given_open: float = 0.15
    unsubscribe_per_message: float = 0.004
    unsubscribe: dict[str, float] = field(default_factory=dict)

    def rate(self, arm: str) -> float:
        """True probability of converting within the window in ``arm``."""
        return self.conversion.get(arm, self.baseline)

    def describe(self) -> str:
        """The truth in words."""
        rates = ", ".join(f"{a} {p:.1%}" for a, p in self.conversion.items())
        unsub = ", ".join(f"{a} x{m:g}" for a, m in self.unsubscribe.items())
        return f"conversion within the window: {rates}" + (
            f"; unsubscribes per message: {unsub}" if unsub else ""
        )


#: The known truth of each example flow (by flow id) and the decision it must lead to.
DEMO_FLOW_TRUTHS: dict[str, FlowTruth] = {
    # the 3-day wait converts later but more: the naive count makes it look worse early
    "welcome": FlowTruth(conversion={"wait_1d": 0.06, "wait_3d": 0.075}),
    # a third reminder buys a few orders with unsubscribes: the guardrail must veto it
    "winback": FlowTruth(
        conversion={"two": 0.05, "three": 0.062}, unsubscribe={"three": 3.0}, baseline=0.05
    ),
    # the reminder earns orders over sending nothing
    "cart": FlowTruth(conversion={"none": 0.08, "reminder": 0.11}, baseline=0.08),
}
EXPECTED_FLOW_DECISIONS: dict[str, tuple[str, str | None]] = {
    "welcome": ("ship", "wait_3d"),
    "winback": ("guardrail_veto", None),
    "cart": ("ship", "reminder"),
}


def nudge_days(flow: FlowSpec, arms: list[str]) -> np.ndarray:
    """Day of each arm's last message after entry (NaN for an arm that sends nothing)."""
    return np.array([max((d for d, _, _ in flow.arm_sends(a)), default=np.nan) for a in arms])


def draw_conversion_times(
    rng: np.random.Generator,
    arm: np.ndarray,
    rates: np.ndarray,
    nudge: np.ndarray,
    window: float,
    nudged_share: float = 0.6,
) -> np.ndarray:
    """Days from entry to conversion per person (NaN: does not convert within the window).

    Converters in an arm with a message convert after it (``nudge`` day + Beta(1, 3) of the rest
    of the window) with probability ``nudged_share``, else anywhere in the window (Beta(1, 1.5)).
    """
    n = arm.size
    converts = rng.random(n) < rates[arm]
    day = nudge[arm]
    nudged = np.isfinite(day) & (rng.random(n) < nudged_share)
    late = np.where(np.isfinite(day), day, 0.0)
    t = np.where(
        nudged,
        late + (window - late) * rng.beta(1.0, 3.0, n),
        window * rng.beta(1.0, 1.5, n),
    )
    return np.where(converts, t, np.nan)


def draw_flow_outcomes(
    rng: np.random.Generator,
    n: int,
    shares: np.ndarray,
    rates: np.ndarray,
    nudge: np.ndarray,
    window: float,
    entry_days: float,
    nudged_share: float = 0.6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arm index, entry day, days to conversion) of ``n`` people entering over ``entry_days``."""
    arm = rng.choice(len(shares), size=n, p=np.asarray(shares) / np.sum(shares))
    entry = rng.uniform(0.0, entry_days, n)
    t = draw_conversion_times(rng, arm, np.asarray(rates), np.asarray(nudge), window, nudged_share)
    return arm, entry, t


@dataclass
class SimulatedFlow:
    """A simulated flow test: entries, assignment, events and the truth behind them."""

    spec: ExperimentSpec
    truth: FlowTruth
    entries: pd.DataFrame
    assignment: pd.DataFrame
    events: pd.DataFrame
    start: pd.Timestamp

    def as_of(self, day: float) -> SimulatedFlow:
        """What a look ``day`` days after the first entry sees: entries and events until then."""
        cutoff = self.start + pd.Timedelta(days=day)
        assignment = self.assignment[self.assignment["entered_at"] <= cutoff]
        entries = self.entries[self.entries["entered_at"] <= cutoff]
        events = self.events[self.events["ts"] <= cutoff]
        return SimulatedFlow(
            self.spec,
            self.truth,
            entries.reset_index(drop=True),
            assignment.reset_index(drop=True),
            events.reset_index(drop=True),
            self.start,
        )

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``events.parquet`` (canonical schema + flow columns) and ``assignment.parquet``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        schema = EVENT_SCHEMA
        for name, kind in FLOW_EVENT_COLUMNS:
            if name not in schema.names:
                schema = schema.append(pa.field(name, kind))
        table = pa.Table.from_pandas(self.events[schema.names], schema=schema, preserve_index=False)
        events_path = folder / "events.parquet"
        pq.write_table(table, events_path)
        assignment_path = folder / "assignment.parquet"
        self.assignment.to_parquet(assignment_path, index=False)
        return events_path, assignment_path


def simulate_flow(
    spec: ExperimentSpec,
    truth: FlowTruth,
    recipients: int = 20_000,
    entry_days: float = 14.0,
    seed: int = 0,
    start: datetime = START,
) -> SimulatedFlow:
    """Simulate ``recipients`` people entering ``spec``'s flow evenly over ``entry_days``.

    The events run until every window has closed; :meth:`SimulatedFlow.as_of` cuts a look.
    """
    flow = spec.flow
    if flow is None:
        raise ValueError(f"spec {spec.name!r} has no flow: section to simulate")
    rng = np.random.default_rng(seed)
    people = make_recipients(recipients, seed)
    t0 = pd.Timestamp(start)
    entered = t0 + pd.to_timedelta(rng.uniform(0, entry_days * DAY, recipients), unit="s")
    entries = pd.DataFrame(
        {
            "recipient_key": people["recipient_key"],
            "entered_at": entered.floor("us"),
            "segment": people["segment"],
        }
    )
    assigned = assign_flow_entries(entries, spec)
    a = assigned.assignment
    arms = [v.id for v in spec.variants]
    arm = np.array([arms.index(v) for v in a["variant_id"]])
    rates = np.array([truth.rate(x) for x in arms])
    window = flow.conversion.window_days
    t_conv = draw_conversion_times(
        rng, arm, rates, nudge_days(flow, arms), window, truth.nudged_share
    )
    walker = _Walker(spec, truth, a, t_conv, rng)
    walker.walk(flow.first, np.arange(len(a)), np.zeros(len(a)))
    walker.orders()
    events = walker.frame()
    return SimulatedFlow(spec, truth, assigned.entries, a, events, t0)


class _Walker:
    """Walks each recipient through the flow's steps and collects their events (vectorised)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        truth: FlowTruth,
        assignment: pd.DataFrame,
        t_conv: np.ndarray,
        rng: np.random.Generator,
    ):
        self.flow = spec.flow
        self.spec = spec
        self.truth = truth
        self.rng = rng
        self.key = assignment["recipient_key"].to_numpy(dtype=object)
        self.arm = assignment["variant_id"].to_numpy(dtype=object)
        self.entered_at = assignment["entered_at"].reset_index(drop=True)
        self.t_conv = t_conv
        n = len(assignment)
        self.unsubscribed = np.full(n, np.inf)
        self.last = {"open": np.full(n, np.nan), "click": np.full(n, np.nan)}
        self.parts: list[dict] = []

    def emit(self, idx: np.ndarray, kind: str, day: np.ndarray, step: str | None) -> None:
        if idx.size:
            self.parts.append({"i": idx, "event_type": kind, "day": day, "step_id": step})

    def walk(self, step_id: str | None, idx: np.ndarray, day: np.ndarray) -> None:
        """Send, wait, branch: ``idx`` are the recipients at ``step_id`` on ``day`` after entry."""
        assert self.flow is not None
        if step_id is None or idx.size == 0:
            return
        step = self.flow.step(step_id)
        if step.send is not None:
            self._send(step.id, idx, day)
            self.walk(step.next, idx, day)
        elif step.wait_days is not None:
            self.walk(step.next, idx, day + step.wait_days)
        elif step.condition is not None:
            c = step.condition
            when = self.t_conv[idx] if c.event == "order" else self.last[c.event][idx]
            since = day - c.within_days if c.within_days is not None else -np.inf
            yes = np.isfinite(when) & (when <= day) & (when >= since)
            self.walk(c.then, idx[yes], day[yes])
            self.walk(c.otherwise, idx[~yes], day[~yes])
        else:
            branches = step.split or []
            if step.id == self.flow.experiment:
                picks = [self.arm[idx] == b.id for b in branches]
            else:
                w = np.array([b.weight or 1.0 for b in branches])
                choice = self.rng.choice(len(branches), size=idx.size, p=w / w.sum())
                picks = [choice == k for k in range(len(branches))]
            for b, pick in zip(branches, picks, strict=True):
                self.walk(b.next, idx[pick], day[pick])

    def _send(self, step: str, idx: np.ndarray, day: np.ndarray) -> None:
        t = self.truth
        rng = self.rng
        live = self.unsubscribed[idx] > day
        idx, day = idx[live], day[live]
        n = idx.size
        self.emit(idx, "send", day, step)
        self.emit(idx, "delivered", day + 30 / DAY, step)
        opened = rng.random(n) < t.open_rate
        t_open = day + rng.exponential(2 / 24, n)
        self.emit(idx[opened], "open", t_open[opened], step)
        self.last["open"][idx[opened]] = t_open[opened]
        clicked = opened & (rng.random(n) < t.click_given_open)
        t_click = t_open + rng.exponential(10 / 1440, n)
        self.emit(idx[clicked], "click", t_click[clicked], step)
        self.last["click"][idx[clicked]] = t_click[clicked]
        mult = np.array([t.unsubscribe.get(a, 1.0) for a in self.arm[idx]])
        unsub = rng.random(n) < t.unsubscribe_per_message * mult
        t_unsub = day + rng.exponential(8 / 24, n)
        self.emit(idx[unsub], "unsubscribe", t_unsub[unsub], step)
        self.unsubscribed[idx[unsub]] = np.minimum(self.unsubscribed[idx[unsub]], t_unsub[unsub])

    def orders(self) -> None:
        """The conversion events (orders, or the flow's conversion event) at their true times."""
        assert self.flow is not None
        idx = np.flatnonzero(np.isfinite(self.t_conv))
        if self.flow.conversion.event == "order":
            self.emit(idx, "order", self.t_conv[idx], None)

    def frame(self) -> pd.DataFrame:
        """The events in the canonical schema with ``flow_id`` and ``step_id``, in time order."""
        assert self.flow is not None
        i = np.concatenate([p["i"] for p in self.parts])
        day = np.concatenate([p["day"] for p in self.parts])
        kind = np.concatenate([np.full(p["i"].size, p["event_type"]) for p in self.parts])
        step = np.concatenate(
            [np.full(p["i"].size, p["step_id"], dtype=object) for p in self.parts]
        )
        # From each recipient's own (microsecond) entry time, so no event precedes the entry.
        after = pd.to_timedelta(day * DAY, unit="s").floor("us")
        events = pd.DataFrame(
            {
                "event_type": kind,
                "ts": self.entered_at.iloc[i].reset_index(drop=True) + after,
                "recipient_key": self.key[i],
                "variant_id": self.arm[i],
                "step_id": step,
            }
        )
        events = events.sort_values(["ts", "recipient_key"], kind="stable", ignore_index=True)
        events["event_id"] = [f"flow-{k:09d}" for k in range(len(events))]
        events["provider"] = "simulated"
        events["flow_id"] = self.flow.id
        events["campaign_id"] = self.spec.campaign
        events["message_id"] = np.where(
            events["step_id"].notna(), events["step_id"] + "-" + events["recipient_key"], None
        )
        is_order = events["event_type"] == "order"
        events["revenue"] = np.where(
            is_order, np.round(self.rng.lognormal(4.0, 0.6, len(events)), 2), np.nan
        )
        events["currency"] = np.where(is_order, "USD", None)
        events["is_machine_open"] = np.where(events["event_type"] == "open", False, None)
        events["is_bot_click"] = np.where(events["event_type"] == "click", False, None)
        for name in EVENT_SCHEMA.names:
            if name not in events:
                events[name] = None
        return events


__all__ = [
    "DEMO_FLOW_TRUTHS",
    "EXPECTED_FLOW_DECISIONS",
    "FlowTruth",
    "SimulatedFlow",
    "draw_conversion_times",
    "draw_flow_outcomes",
    "nudge_days",
    "simulate_flow",
]
