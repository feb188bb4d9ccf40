"""The ``flow:`` section of a spec: a test of an automation chain, not of one mail.

A flow starts at a trigger (signup, cart, purchase, lapse) and walks its steps: send a message,
wait some days, branch on an event (opened, clicked, ordered) seen within a look-back window, or
split at random by weights. One split node is *the experiment*: its branches are the spec's
variants, so the arms can differ in a wait, the number of messages (cadence), a message, or whether
a message is sent at all (a branch with no send is a per-node holdout, with no size floor).

The estimand is intent-to-treat from entry into the experiment's split: the conversion event
within ``conversion.window_days`` of entry (:mod:`loopexp.analysis.flow`). Validation locates every
problem by step id: unknown or unreachable steps, cycles, and a message sent after the conversion
window has closed (it could not change the outcome the test is judged on).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

from pydantic import Field, model_validator

from loopexp.design.parts import SpecModel, Variant

StepId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
#: Longest wait or window a flow may declare (a year); beyond it the number is a typo.
MAX_DAYS = 365.0


class Branch(SpecModel):
    """One branch of a random split: where it goes, and its relative weight.

    In the experiment's split the branch ``id`` is a variant id and the weight is the variant's.
    """

    id: StepId
    next: StepId | None = None
    """The step this branch goes to; none: the flow ends (e.g. a no-send holdout branch)."""
    weight: Annotated[float, Field(gt=0, le=1000)] | None = None


class Condition(SpecModel):
    """Branch on whether the recipient did ``event`` in the last ``within_days`` (since entry)."""

    event: Literal["open", "click", "order"]
    within_days: Annotated[float, Field(gt=0, le=MAX_DAYS)] | None = None
    """Look-back window; none: since the recipient entered the flow."""
    then: StepId | None = None
    """Next step when the event happened; none: the flow ends."""
    otherwise: StepId | None = None
    """Next step when it did not; none: the flow ends."""


class Step(SpecModel):
    """One step: exactly one of ``send``, ``wait_days``, ``condition`` or ``split``."""

    id: StepId
    send: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """The message sent at this step (its name in the ESP)."""
    wait_days: Annotated[float, Field(gt=0, le=MAX_DAYS)] | None = None
    condition: Condition | None = None
    split: Annotated[list[Branch], Field(min_length=2)] | None = None
    next: StepId | None = None
    """The following step of a send or wait; none: the flow ends."""

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in ("send", "wait_days", "condition", "split") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                f"step {self.id!r} must have exactly one of send, wait_days, condition or split "
                f"(it has {kinds or 'none'})"
            )
        if (self.condition or self.split) and self.next is not None:
            raise ValueError(
                f"step {self.id!r}: a condition or split goes on through its branches "
                "(then/otherwise, split[].next), not `next`"
            )
        return self

    @property
    def kind(self) -> str:
        """``send``, ``wait``, ``condition`` or ``split``."""
        for kind, field in (("send", "send"), ("wait", "wait_days"), ("condition", "condition")):
            if getattr(self, field) is not None:
                return kind
        return "split"

    def successors(self) -> list[StepId]:
        """The steps this one can lead to."""
        if self.condition is not None:
            targets = [self.condition.then, self.condition.otherwise]
        elif self.split is not None:
            targets = [b.next for b in self.split]
        else:
            targets = [self.next]
        return [t for t in targets if t is not None]


class Conversion(SpecModel):
    """The outcome a flow test is judged on: ``event`` within ``window_days`` of entry."""

    event: Literal["order", "click", "open"] = "order"
    window_days: Annotated[float, Field(gt=0, le=MAX_DAYS)] = 7.0


class FlowSpec(SpecModel):
    """An automation flow whose split node ``experiment`` is tested."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    """The flow's id in the ESP (Klaviyo flow id, Braze canvas id): events' ``flow_id``."""
    trigger: Literal["signup", "cart", "purchase", "lapse"]
    start: StepId | None = None
    """The first step; none: the first step listed."""
    steps: Annotated[list[Step], Field(min_length=1)]
    experiment: StepId
    """The split step whose branches are the variants under test."""
    conversion: Conversion = Field(default_factory=Conversion)
    recency_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    """Audience rule: an entry within this many days of the recipient's previous one is not
    counted (the recipient is already in the flow). None: every first entry counts."""
    backlog: list[Branch] = Field(default_factory=list)
    """Branches of challengers waiting for a later iteration (the spec's ``backlog:`` variants):
    when one is drawn, its branch joins the experiment split (:mod:`loopexp.learn.flow`)."""
    compatible_with: list[Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]] = Field(
        default_factory=list
    )
    """Earlier flow versions (:meth:`version`) whose entries may be pooled with this one's: the
    change was declared not to touch the test. Others are never pooled."""

    @model_validator(mode="after")
    def _graph(self) -> FlowSpec:
        problems = list(_graph_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def step(self, step_id: str) -> Step:
        """The step called ``step_id``."""
        return next(s for s in self.steps if s.id == step_id)

    @property
    def first(self) -> str:
        """The id of the step the flow starts at."""
        return self.start or self.steps[0].id

    @property
    def split_node(self) -> Step:
        """The experiment's split step."""
        return self.step(self.experiment)

    def version(self) -> str:
        """12-hex fingerprint of the flow's definition: an edit makes a new analysis segment."""
        return hashlib.sha256(
            self.model_dump_json(exclude={"compatible_with"}).encode()
        ).hexdigest()[:12]

    def arm_sends(self, arm: str) -> list[tuple[float, str, str]]:
        """(days after entry, step id, message) of each send of ``arm`` when no condition fires.

        Conditions take their ``otherwise`` branch (nobody opened, clicked or ordered): the
        longest schedule the arm can have, the one a recipient who does not react gets.
        """
        branch = next(b for b in self.split_node.split or [] if b.id == arm)
        return list(_walk(self, branch.next, 0.0))


def _walk(flow: FlowSpec, step_id: str | None, day: float) -> Iterator[tuple[float, str, str]]:
    while step_id is not None:
        step = flow.step(step_id)
        if step.send is not None:
            yield day, step.id, step.send
        if step.wait_days is not None:
            day += step.wait_days
        if step.split is not None:  # a non-experiment split: the first branch's schedule
            step_id = step.split[0].next
        elif step.condition is not None:
            step_id = step.condition.otherwise
        else:
            step_id = step.next


def _graph_problems(flow: FlowSpec) -> Iterator[str]:
    ids = [s.id for s in flow.steps]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        yield f"step ids must be unique; repeated: {repeated}"
        return
    known = set(ids)
    broken = [
        f"step {s.id!r} leads to unknown step {t!r} (steps: {ids})"
        for s in flow.steps
        for t in s.successors()
        if t not in known
    ]
    broken += [
        f"backlog branch {b.id!r} leads to unknown step {b.next!r} (steps: {ids})"
        for b in flow.backlog
        if b.next is not None and b.next not in known
    ]
    if flow.start is not None and flow.start not in known:
        broken.append(f"start {flow.start!r} is not a step (steps: {ids})")
    if flow.experiment not in known or flow.step(flow.experiment).split is None:
        broken.append(f"experiment {flow.experiment!r} must name a split step (steps: {ids})")
    if broken:  # the walks below need every reference resolved
        yield from broken
        return
    yield from _reach_problems(flow)


def _reach_problems(flow: FlowSpec) -> Iterator[str]:
    """Cycles, unreachable steps, and sends after the conversion window."""
    cycle = _find_cycle(flow)
    if cycle:
        yield (
            f"steps {' -> '.join(cycle)} form a cycle; a flow runs forward in time (end the "
            "loop, or use a later flow)"
        )
        return
    reached = _reachable(flow, flow.first, [b.next for b in flow.backlog if b.next])
    unreachable = [s.id for s in flow.steps if s.id not in reached]
    if unreachable:
        yield f"steps {unreachable} cannot be reached from the start {flow.first!r}; remove them"
    window = flow.conversion.window_days
    for branch in [*(flow.split_node.split or []), *flow.backlog]:
        for day, step_id, _ in _all_sends(flow, branch.next, 0.0):
            if day >= window:
                yield (
                    f"step {step_id!r} (arm {branch.id!r}) sends {day:g} days after entry into "
                    f"{flow.experiment!r}, when the conversion window of {window:g} days has "
                    "closed: it cannot change the outcome; shorten its waits or lengthen "
                    "conversion.window_days"
                )


def _all_sends(flow: FlowSpec, step_id: str | None, day: float) -> Iterator[tuple[float, str, str]]:
    """Every (day, step, message) reachable from ``step_id`` on any branch (acyclic flows)."""
    if step_id is None:
        return
    step = flow.step(step_id)
    if step.send is not None:
        yield day, step.id, step.send
    later = day + (step.wait_days or 0.0)
    for target in step.successors():
        yield from _all_sends(flow, target, later)


def _reachable(flow: FlowSpec, start: str, also: Sequence[str] = ()) -> set[str]:
    """Steps reachable from ``start`` (and from ``also``: the backlog branches' first steps)."""
    seen: set[str] = set()
    stack = [start, *also]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(flow.step(current).successors())
    return seen


def _find_cycle(flow: FlowSpec) -> list[str] | None:
    """The steps of one cycle (first step repeated at the end), or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in (s.id for s in flow.steps):
        if root in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(flow.step(root).successors()))]
        state[root] = 1
        path.append(root)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(flow.step(child).successors())))
    return None


def check_flow_spec(
    flow: FlowSpec | None,
    test_type: str,
    variants: Sequence[Variant],
    backlog: Sequence[Variant],
    enrolment: str,
    holdout: float,
    primary_metric: str,
    guardrail_metrics: Sequence[str] = (),
) -> None:
    """Checks spanning the flow and the rest of the spec (raised as ``ValueError``)."""
    if (test_type == "flow") != (flow is not None):
        raise ValueError("test_type flow and a `flow:` section go together; set both or neither")
    if flow is None:
        return
    ids = [v.id for v in variants]
    branches = flow.split_node.split or []
    arms = [b.id for b in branches]
    if sorted(arms) != sorted(ids):
        raise ValueError(
            f"the branches of the experiment split {flow.experiment!r} ({arms}) must be the "
            f"variants ({ids}): each arm of the test is one branch"
        )
    waiting = sorted(b.id for b in flow.backlog)
    if waiting != sorted(v.id for v in backlog):
        raise ValueError(
            f"flow.backlog branches ({waiting}) must be the backlog variants "
            f"({[v.id for v in backlog]}): each waiting challenger needs its branch"
        )
    weights = {v.id: v.weight for v in variants}
    for b in branches:
        if b.weight is not None and b.weight != weights[b.id]:
            raise ValueError(
                f"split {flow.experiment!r} branch {b.id!r}: weight {b.weight:g} differs from "
                f"the variant's {weights[b.id]:g}; set the weight on the variant only"
            )
    if enrolment != "continuous":
        raise ValueError("a flow test enrols continuously: set `enrolment: continuous`")
    if holdout > 0:
        raise ValueError(
            "a flow test has no audience.holdout: make the holdout an arm of the split whose "
            "branch sends nothing (`next:` left out)"
        )
    others = sorted(set(guardrail_metrics) - {"unsubscribe_rate"})
    if others:
        raise ValueError(
            f"a flow test's guardrail is unsubscribe_rate (within the window, per entered "
            f"recipient); {others} cannot be judged from entry yet: remove them"
        )
    if primary_metric != "conversion_rate":
        raise ValueError(
            "a flow test is judged on conversion_rate: the flow's conversion event within "
            "conversion.window_days of entry, per entered recipient; set primary_metric to it"
        )


FLOW_TEST_TYPE = "flow"
