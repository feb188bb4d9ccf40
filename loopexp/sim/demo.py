"""Hands-off closed loop: several iterations on a simulated campaign whose truth changes.

``loopexp demo --iterations 3`` runs :func:`run_demo_loop`: each iteration is simulated from the
current spec with that iteration's true effects and analysed by the real pipeline
(:func:`loopexp.run.pipeline.run_iteration`, exactly what a scheduled ``loopexp run`` does:
papermill notebook, DuckDB, MLflow, its send slots analysed by :mod:`loopexp.learn.sendtime`, and
the next spec written by :func:`loopexp.learn.iteration.next_iteration` with the learned send
windows, a winner's-curse-corrected plan and, when adaptive, Thompson weights); lineage is the next
spec's ``parent_run_id``. At the end the closed-loop report is built from MLflow and logged to a
report run.

The demo campaign's truth (:data:`DEMO_TRUTHS`), relative to the original control:

1. "personal" lifts opens by 50 % (really better); "urgency" lifts opens a little but triples
   unsubscribes (the guardrail must veto it);
2. "personal" is the control; "benefit" lifts clicks per open by a further 50 % (really better),
   "question" is as good as the control;
3. "benefit" is the control; "story" triples unsubscribes, "emoji" is as good as the control:
   nothing ships, and the backlog is empty, so the next spec says what to test next.

In every iteration the best send slot differs by segment (:data:`DEMO_SLOT_EFFECTS`).

A first spec with ``policy:`` (e.g. ``experiments/personalised_subject.yaml``) is simulated with
:data:`loopexp.sim.policy.DEMO_POLICY_TRUTH` instead (issue 27): iteration 1 learns a per-segment
policy, the next iterations deploy it and print its projected vs realised gain.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopexp.design.parts import AllocationSettings
from loopexp.design.resources import example_spec_path
from loopexp.design.spec import load_spec, write_spec
from loopexp.learn.history import ClosedLoopReport
from loopexp.learn.policy.step import read_step
from loopexp.learn.sendtime import SendTimeAnalysis
from loopexp.report.closed_loop import write_html
from loopexp.run.learning import read_send_time
from loopexp.run.pipeline import IterationOutcome, run_iteration
from loopexp.sim.policy import DEMO_POLICY_TRUTH
from loopexp.sim.simulate import TrueEffects, simulate_campaign
from loopexp.track.closed_loop import build_report, campaign_subjects, log_report
from loopexp.track.tracking import resolve_tracking_uri

CLOSED_LOOP_SPEC = "closed_loop_demo.yaml"

#: Best send slot per segment: opens x1.5 there.
DEMO_SLOT_EFFECTS: dict[str, dict[str, float]] = {
    "prospect": {"07:00": 1.0, "12:00": 1.0, "19:00": 1.5},
    "new_customer": {"07:00": 1.5, "12:00": 1.0, "19:00": 1.0},
    "existing_customer": {"07:00": 1.5, "12:00": 1.0, "19:00": 1.0},
    "inactive": {"07:00": 1.0, "12:00": 1.5, "19:00": 1.0},
}
DEMO_BEST_SLOTS = {seg: max(s, key=s.__getitem__) for seg, s in DEMO_SLOT_EFFECTS.items()}

_P = 1.5  # personal's open lift, kept by every later control
_B = 1.5  # benefit's click-per-open lift, kept by the third control
#: The truth of each iteration (multipliers of the original control's probabilities).
DEMO_TRUTHS: list[TrueEffects] = [
    TrueEffects(
        open={"personal": _P, "urgency": 1.05},
        unsubscribe={"urgency": 3.0},
        slot_open=DEMO_SLOT_EFFECTS,
    ),
    TrueEffects(
        open={"personal": _P, "question": _P, "benefit": _P},
        click_given_open={"benefit": _B},
        slot_open=DEMO_SLOT_EFFECTS,
    ),
    TrueEffects(
        open={"benefit": _P, "story": _P, "emoji": _P},
        click_given_open={"benefit": _B, "story": _B, "emoji": _B},
        unsubscribe={"story": 3.0},
        slot_open=DEMO_SLOT_EFFECTS,
    ),
]
#: What the decisions must be when the loop follows the truth: (status, winner) per iteration.
EXPECTED_DECISIONS = [("ship", "personal"), ("ship", "benefit"), (None, None)]


@dataclass
class DemoIteration:
    """One iteration of the hands-off demo."""

    spec_path: Path
    truth: TrueEffects
    outcome: IterationOutcome
    send_time: SendTimeAnalysis | None
    next_spec_path: Path | None
    next_spec_note: str


@dataclass
class DemoLoop:
    """The whole demo: its iterations and the closed-loop report."""

    iterations: list[DemoIteration]
    report: ClosedLoopReport
    report_path: Path
    report_run_id: str


def run_demo_loop(
    out: str | Path,
    iterations: int = 3,
    recipients: int = 60_000,
    seed: int = 7,
    tracking_uri: str | None = None,
    spec_path: str | Path | None = None,
    truths: list[TrueEffects] | None = None,
    progress: Callable[[str], None] | None = None,
    adaptive: bool = False,
) -> DemoLoop:
    """Run ``iterations`` iterations hands-off; return them and the closed-loop report.

    ``adaptive``: the first spec gets ``allocation:`` (if it has none), so every next spec's
    weights come from Thompson sampling on this iteration's posterior
    (:func:`loopexp.learn.allocation.thompson_weights`), control share fixed, 5 % floor.
    """
    out = Path(out).resolve()
    say = progress or (lambda _msg: None)
    uri = resolve_tracking_uri(tracking_uri)
    experiments = out / "experiments"
    current = _first_spec(experiments, spec_path, adaptive)
    policy = load_spec(current).policy is not None  # issue 27: a heterogeneous truth to learn
    truths = truths or ([DEMO_POLICY_TRUTH] if policy else DEMO_TRUTHS)
    done: list[DemoIteration] = []
    for i in range(iterations):
        spec = load_spec(current)
        truth = truths[min(i, len(truths) - 1)]
        say(f"iteration {spec.iteration}: simulating {recipients:,} recipients; {truth.describe()}")
        campaign = simulate_campaign(spec, recipients, truth, seed=seed + i)
        events, assignment = campaign.write(out / "data" / f"iter{spec.iteration}")
        analysis = out / "analysis" / f"iter{spec.iteration}"
        outcome = run_iteration(
            current, events, assignment, analysis, uri, experiments, progress=progress
        )
        next_path, note = outcome.next_spec_path, outcome.next_spec_note
        st = read_send_time(outcome.output_dir)
        done.append(DemoIteration(current, truth, outcome, st, next_path, note))
        decision = outcome.results.decision
        say(
            f"iteration {spec.iteration}: {decision.status.value}"
            + (f" ({decision.winner})" if decision.winner else "")
        )
        step = read_step(outcome.output_dir)  # issue 27: the policy learned / measured
        if step is not None:
            say(f"iteration {spec.iteration}: {step.gain_line or step.line()}")
            rules = "; ".join(step.next_policy.words()) or "none (one variant for everyone)"
            say(f"iteration {spec.iteration}: next policy: {rules}")
        if next_path is None:
            say(f"no next iteration: {note}")
            break
        current = next_path
    campaign_name = load_spec(done[0].spec_path).campaign
    report = build_report(campaign_name, uri, out / "report" / "final")
    subjects = campaign_subjects(campaign_name, uri)
    report_path = write_html(report, out / "closed_loop_report.html", subjects=subjects)
    run_id = log_report(report, report_path)
    (out / "closed_loop_report.json").write_text(
        json.dumps({"report_run_id": run_id, "html": str(report_path)}), encoding="utf-8"
    )
    return DemoLoop(done, report, report_path, run_id)


def _first_spec(experiments: Path, spec_path: str | Path | None, adaptive: bool) -> Path:
    """The first iteration's spec, copied into the demo's ``experiments/`` (adaptive if asked)."""
    experiments.mkdir(parents=True, exist_ok=True)
    source = Path(spec_path) if spec_path else example_spec_path(CLOSED_LOOP_SPEC)
    current = experiments / source.name
    if current.resolve() != source.resolve():
        shutil.copyfile(source, current)
    spec = load_spec(current)
    if adaptive and spec.allocation is None:
        write_spec(spec.model_copy(update={"allocation": AllocationSettings()}), current)
    return current


__all__ = [
    "CLOSED_LOOP_SPEC",
    "DEMO_BEST_SLOTS",
    "DEMO_SLOT_EFFECTS",
    "DEMO_TRUTHS",
    "EXPECTED_DECISIONS",
    "DemoIteration",
    "DemoLoop",
    "run_demo_loop",
]
