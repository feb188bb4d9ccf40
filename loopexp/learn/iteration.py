"""Closing the loop: the next iteration's spec, written from this iteration's decision.

- ship: the winner becomes control; fresh challengers come from the backlog.
- no_difference / guardrail_veto: the control stays; failed or flat challengers are replaced from
  the backlog.
- keep_testing / invalid_srm: the same variants run again (after fixing the split, for SRM).

Learning carried forward (issue 18): a send-time recommendation (``send_time``, from
:func:`loopexp.learn.sendtime.next_send_time`) replaces the spec's ``send_time:`` so each segment is
mailed at its window with a randomised share kept; adaptive ``weights`` (from
:func:`loopexp.learn.allocation.thompson_weights`) replace the variants' weights.

Every next spec gets iteration + 1, a new salt (re-randomised, no carry-over), the parent MLflow
run id, and a sample size re-planned from the next control's observed rate of the primary metric.
"""

from __future__ import annotations

from loopexp.analysis.results import ExperimentResults, Status
from loopexp.core.errors import InputError
from loopexp.design.parts import SendTimeSettings
from loopexp.design.plan import plan_for
from loopexp.design.spec import ExperimentSpec


class LoopError(InputError):
    """The next iteration cannot be written as asked (e.g. no challengers left)."""


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
    of :func:`loopexp.track.closed_loop.planning_baseline`).
    """
    decision = results.decision
    status = decision.status
    control = next(v for v in spec.variants if v.id == spec.control)
    backlog = list(spec.backlog)

    if status in (Status.KEEP_TESTING, Status.INVALID_SRM):
        new_control, challengers = control, spec.challengers
    else:
        # Every challenger retires: it lost to the winner, to the control, or broke a guardrail.
        new_control = (
            next(v for v in spec.variants if v.id == decision.winner)
            if status == Status.SHIP
            else control
        )
        take = len(spec.challengers)
        challengers, backlog = backlog[:take], backlog[take:]
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
    next_spec = ExperimentSpec.model_validate(data)
    if rate is not None and 0 < rate < 1:
        # Re-planned as `loopexp plan` would: the next spec's challengers, decision method (a
        # sequential test needs ~1.9x) and delivery rate (sends grossed up to delivered).
        data["planned_recipients_per_variant"] = plan_for(next_spec, rate).per_variant
        next_spec = ExperimentSpec.model_validate(data)
    return next_spec
