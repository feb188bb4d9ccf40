"""Closing the loop: the next iteration's spec, written from this iteration's decision.

- ship: the winner becomes control; fresh challengers come from the backlog.
- no_difference / guardrail_veto: the control stays; failed or flat challengers are replaced from
  the backlog.
- keep_testing / invalid_srm: the same variants run again (after fixing the split, for SRM).

Learning carried forward (issues 18, 23): :func:`next_iteration` writes the next spec with what
the iteration taught (:class:`Learned`, gathered by :func:`learned_from`): a send-time
recommendation (from :func:`loopexp.learn.sendtime.next_send_time`) replaces the spec's
``send_time:`` so each segment is mailed at its window with a randomised share kept; adaptive
weights (from :func:`loopexp.learn.allocation.thompson_weights`, when the spec asks for
``allocation:``) replace the variants' weights; the winner's-curse-corrected baseline
(:func:`loopexp.learn.shrinkage.planning_baseline`) re-plans the sample size. ``loopexp run`` (the
scheduled path) and ``loopexp demo`` both call it, so production learns exactly as the demo does.

Every next spec gets iteration + 1, a new salt (re-randomised, no carry-over), the parent MLflow
run id, and a sample size re-planned from the next control's observed rate of the primary metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loopexp.analysis.results import ExperimentResults, Status
from loopexp.core.errors import InputError
from loopexp.design.parts import SendTimeSettings, Variant
from loopexp.design.plan import plan_for
from loopexp.design.policy import PolicySettings
from loopexp.design.spec import ExperimentSpec
from loopexp.learn.allocation import thompson_weights
from loopexp.learn.flow import next_flow
from loopexp.learn.sendtime import SendTimeAnalysis, next_send_time
from loopexp.learn.shrinkage import planning_baseline


class LoopError(InputError):
    """The next iteration cannot be written as asked (e.g. no challengers left)."""


@dataclass(frozen=True)
class Learned:
    """What one iteration taught, to be carried into the next spec by :func:`next_iteration`."""

    send_time: SendTimeSettings | None = None
    """The next send-time settings: each segment's learned window, a share still randomised."""
    weights: dict[str, float] | None = None
    """The next variants' adaptive weights by id (None: they keep theirs)."""
    baseline: float | None = None
    """The next control's primary rate corrected for winner's curse (None: the observed rate)."""
    policy: PolicySettings | None = None
    """The next ``policy:`` section (issue 27, :mod:`loopexp.learn.policy.step`): with rules, the
    next spec keeps these variants and deploys the rules; without, the decision stands and the
    next send is learned from again."""


def _next_arms(
    spec: ExperimentSpec, results: ExperimentResults
) -> tuple[Variant, list[Variant], list[Variant]]:
    """The next control, its challengers and the remaining backlog, from the decision."""
    decision = results.decision
    status = decision.status
    control = next(v for v in spec.variants if v.id == spec.control)
    backlog = list(spec.backlog)
    if status in (Status.KEEP_TESTING, Status.INVALID_SRM):
        return control, list(spec.challengers), backlog
    # Every challenger retires: it lost to the winner, to the control, or broke a guardrail.
    if status == Status.SHIP:
        control = next(v for v in spec.variants if v.id == decision.winner)
    take = len(spec.challengers)
    return control, backlog[:take], backlog[take:]


def learned_from(
    spec: ExperimentSpec,
    results: ExperimentResults,
    send_time: SendTimeAnalysis | None = None,
    history: Sequence[ExperimentResults] = (),
    earlier_lifts: Sequence[tuple[float, float]] = (),
) -> Learned:
    """Gather what ``results`` (the iteration of ``spec``) taught for the next spec.

    ``send_time``: this iteration's send-time analysis (None: the spec's send time stays);
    ``history``: the campaign's earlier analysed iterations, oldest first (the winner's-curse
    prior is learned from them and this one); ``earlier_lifts``: primary log lifts ``(y, se)`` of
    earlier iterations known from their runs' digests (not repeated in ``history``). Weights only
    when the spec asks for ``allocation:``.
    """
    weights = None
    if spec.allocation is not None:
        new_control, challengers, _ = _next_arms(spec, results)
        if challengers:  # else next_iteration says why there is no next spec
            weights = thompson_weights(
                spec,
                results,
                [v.id for v in (new_control, *challengers)],
                new_control.id,
                floor=spec.allocation.floor,
                top_two=spec.allocation.method == "top_two",
            )
    return Learned(
        send_time=next_send_time(spec, send_time) if send_time is not None else None,
        weights=weights,
        baseline=planning_baseline([*history, results], earlier_lifts),
    )


def next_iteration(
    spec: ExperimentSpec,
    results: ExperimentResults,
    learned: Learned,
    parent_run_id: str | None = None,
) -> ExperimentSpec:
    """The spec of iteration ``spec.iteration + 1``: ``results``' decision plus ``learned``.

    The one learning path: ``loopexp run`` and ``loopexp demo`` both write their next spec here.
    Raises :class:`LoopError` when no next iteration can be drafted.
    """
    if learned.policy is not None and learned.policy.deployed:
        return _with_policy(spec, learned.policy, parent_run_id)
    nxt = next_spec(
        spec,
        results,
        parent_run_id=parent_run_id,
        send_time=learned.send_time,
        weights=learned.weights,
        baseline=learned.baseline,
    )
    if learned.policy is None:
        return nxt
    data = nxt.model_dump(mode="json")
    data["policy"] = learned.policy.model_dump(mode="json")
    return ExperimentSpec.model_validate(data)


def _with_policy(
    spec: ExperimentSpec, policy: PolicySettings, parent_run_id: str | None
) -> ExperimentSpec:
    """The next iteration deploying ``policy`` (issue 27).

    The same variants (the rules send them), a new salt, the rules with their exploration share.
    """
    iteration = spec.iteration + 1
    data = spec.model_dump(mode="json")
    data.update(
        iteration=iteration,
        salt=f"{spec.campaign}-{spec.test_type.value}-iter-{iteration}",
        parent_run_id=parent_run_id,
        policy=policy.model_dump(mode="json"),
    )
    return ExperimentSpec.model_validate(data)


def next_spec(
    spec: ExperimentSpec,
    results: ExperimentResults,
    parent_run_id: str | None = None,
    send_time: SendTimeSettings | None = None,
    weights: dict[str, float] | None = None,
    baseline: float | None = None,
) -> ExperimentSpec:
    """Write the spec of iteration ``spec.iteration + 1`` from ``results``' decision.

    ``send_time`` replaces the spec's send-time settings (the learned windows); ``weights`` gives
    the next variants' weights by id (variants not named keep theirs); ``baseline`` replaces
    the next control's observed primary rate in the plan (e.g. the winner's-curse-corrected rate
    of :func:`loopexp.learn.shrinkage.planning_baseline`). :func:`next_iteration` passes them
    from a :class:`Learned` record.
    """
    new_control, challengers, backlog = _next_arms(spec, results)
    if not challengers:
        raise LoopError(
            f"iteration {spec.iteration + 1} of {spec.campaign!r} has no challenger: add variants "
            f"under `backlog:` in the spec of iteration {spec.iteration} and run again"
        )
    planned = spec.planned_recipients_per_variant
    # The next control's observed rate is the next baseline (the winner's, after a ship).
    observed = {v.id: v.metrics.get(spec.primary_metric) for v in results.variants}
    seen = observed.get(new_control.id)
    rate = baseline if baseline is not None else (seen.value if seen is not None else None)
    iteration = spec.iteration + 1
    variants = [v.model_dump(mode="json") for v in (new_control, *challengers)]
    for v in variants:
        v["weight"] = (weights or {}).get(v["id"], v["weight"])
    data = spec.model_dump(mode="json")
    data.pop(
        "policy", None
    )  # issue 27: its rules may name retired variants; next_iteration sets it
    data.update(
        iteration=iteration,
        salt=f"{spec.campaign}-{spec.test_type.value}-iter-{iteration}",
        control=new_control.id,
        variants=variants,
        backlog=[v.model_dump(mode="json") for v in backlog],
        parent_run_id=parent_run_id,
        planned_recipients_per_variant=planned,
    )
    if send_time is not None:
        data["send_time"] = send_time.model_dump(mode="json")
    if spec.flow is not None:  # a flow's split follows its arms: the winner's branch adopted
        data["flow"] = next_flow(spec.flow, [v["id"] for v in variants])
    next_spec = ExperimentSpec.model_validate(data)
    if rate is not None and 0 < rate < 1:
        # Re-planned as `loopexp plan` would: the next spec's challengers, decision method (a
        # sequential test needs ~1.9x) and delivery rate (sends grossed up to delivered).
        data["planned_recipients_per_variant"] = plan_for(next_spec, rate).per_variant
        next_spec = ExperimentSpec.model_validate(data)
    return next_spec


__all__ = ["Learned", "LoopError", "learned_from", "next_iteration", "next_spec"]
