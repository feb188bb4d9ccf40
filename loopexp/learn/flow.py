"""The next flow spec: the winning wait, cadence or branch adopted, the next challenger drawn.

:func:`loopexp.learn.iteration.next_spec` picks the next control (the winner after a ship) and
challengers (from the backlog); for a flow, those are branches of the experiment split, so the
next ``flow:`` section is rewritten here: the split's branches become the next control's and the
drawn challengers' (the control's branch — the adopted wait, cadence or send — stays as it ran),
the drawn branches leave ``flow.backlog``, and steps no branch reaches any more are dropped (a
retired arm's waits and sends). ``compatible_with`` is cleared: the edited flow is a new version,
analysed apart from the old one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loopexp.design.flow import Branch, FlowSpec


def next_flow(flow: FlowSpec, arms: Sequence[str]) -> dict[str, Any]:
    """The next iteration's ``flow:`` (as data) whose experiment split has ``arms`` (control first).

    ``arms`` are ids of the current split's branches or of ``flow.backlog``'s.
    """
    known: dict[str, Branch] = {b.id: b for b in [*(flow.split_node.split or []), *flow.backlog]}
    missing = [a for a in arms if a not in known]
    if missing:
        raise ValueError(f"arms {missing} have no branch in flow {flow.id!r} (split or backlog)")
    split = [known[a].model_copy(update={"weight": None}) for a in arms]
    backlog = [b for b in flow.backlog if b.id not in arms]
    data = flow.model_dump(mode="json")
    steps = []
    for step in data["steps"]:
        if step["id"] == flow.experiment:
            step["split"] = [b.model_dump(mode="json") for b in split]
        steps.append(step)
    reached = _reachable(steps, flow.start or steps[0]["id"], [b.next for b in backlog if b.next])
    data.update(
        steps=[s for s in steps if s["id"] in reached],
        backlog=[b.model_dump(mode="json") for b in backlog],
        compatible_with=[],
    )
    return data


def _reachable(steps: list[dict[str, Any]], start: str, also: Sequence[str]) -> set[str]:
    by_id = {s["id"]: s for s in steps}
    seen: set[str] = set()
    stack = [start, *also]
    while stack:
        current = stack.pop()
        if current in seen or current not in by_id:
            continue
        seen.add(current)
        step = by_id[current]
        condition = step.get("condition") or {}
        targets = [step.get("next"), condition.get("then"), condition.get("otherwise")]
        targets += [b.get("next") for b in step.get("split") or []]
        stack.extend(t for t in targets if t)
    return seen


__all__ = ["next_flow"]
