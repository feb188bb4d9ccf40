"""``loopexp demo --spec <flow example>``: a flow test simulated with a known truth, then decided.

The example's truth (:data:`loopexp.sim.flows.DEMO_FLOW_TRUTHS`, by flow id) is simulated with
entries over two weeks and read once every window has closed, by the real pipeline
(:func:`loopexp.run.pipeline.run_iteration`: the flow notebook, DuckDB, MLflow with the flow's
version, and the next spec adopting the winner's branch), exactly as a scheduled ``loopexp run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loopexp.design.spec import load_spec
from loopexp.run.pipeline import IterationOutcome, Progress, run_iteration
from loopexp.sim.flows import DEMO_FLOW_TRUTHS, EXPECTED_FLOW_DECISIONS, FlowTruth, simulate_flow

#: Days of entries in the demo; the look is when the last entrant's window has closed.
DEMO_ENTRY_DAYS = 14.0


@dataclass(frozen=True)
class FlowDemo:
    """The simulated truth, the decision the pipeline made, and the one the truth calls for."""

    truth: FlowTruth
    outcome: IterationOutcome
    expected: tuple[str, str | None]

    @property
    def decided_the_truth(self) -> bool:
        """The pipeline's (status, winner) is the one the simulated truth calls for."""
        d = self.outcome.results.decision
        return (d.status.value, d.winner) == self.expected


def run_flow_demo(
    spec_path: str | Path,
    out: str | Path,
    recipients: int = 60_000,
    seed: int = 7,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
) -> FlowDemo:
    """Simulate the flow example at ``spec_path`` with its known truth and run the loop on it."""
    spec = load_spec(spec_path)
    if spec.flow is None or spec.flow.id not in DEMO_FLOW_TRUTHS:
        known = sorted(DEMO_FLOW_TRUTHS)
        raise ValueError(f"{spec_path}: no simulated truth for this flow (examples: {known})")
    truth = DEMO_FLOW_TRUTHS[spec.flow.id]
    out = Path(out).resolve()
    sim = simulate_flow(spec, truth, recipients, DEMO_ENTRY_DAYS, seed)
    look = DEMO_ENTRY_DAYS + spec.flow.conversion.window_days
    events, assignment = sim.as_of(look).write(out / "data")
    outcome = run_iteration(
        spec_path, events, assignment, out / "analysis", tracking_uri, out, progress=progress
    )
    return FlowDemo(truth, outcome, EXPECTED_FLOW_DECISIONS[spec.flow.id])


__all__ = ["FlowDemo", "run_flow_demo"]
