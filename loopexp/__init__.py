"""loopexp: closed-loop email experimentation.

Plan a mailing, send it, measure, analyse, decide, and feed what was learned into the next mailing.
The submodules follow the loop:

- :mod:`loopexp.spec`: experiment specs (YAML in ``experiments/``, validated with pydantic).
- :mod:`loopexp.plan`: power and sample size.
- :mod:`loopexp.recipients` and :mod:`loopexp.keys`: recipient lists in, addresses hashed.
- :mod:`loopexp.assign`: deterministic salted-hash assignment and send lists.
- :mod:`loopexp.events`: the canonical event table.
- :mod:`loopexp.metrics`: metric definitions and the DuckDB engine (sufficient statistics only).
- :mod:`loopexp.stats`: tests, CIs, Bayesian summaries, multiplicity, SRM.
- :mod:`loopexp.analyze` and :mod:`loopexp.decide`: results and the decision.
- :mod:`loopexp.tracking`: MLflow runs; :mod:`loopexp.notebook`: papermill execution.
- :mod:`loopexp.loop`: the next iteration's spec; :mod:`loopexp.pipeline`: one iteration end to end.
- :mod:`loopexp.simulate`: campaigns with known true effects; :mod:`loopexp.datasets`: real data.
"""

from loopexp.analyze import analyze, analyze_files, data_fingerprint
from loopexp.assign import assign, assign_recipients, write_send_lists
from loopexp.decide import decide
from loopexp.loop import next_spec
from loopexp.metrics import MetricTable, compute_metrics
from loopexp.pipeline import IterationOutcome, run_iteration
from loopexp.plan import sample_size_per_variant
from loopexp.results import ExperimentResults, Status
from loopexp.simulate import TrueEffects, simulate_campaign
from loopexp.spec import ExperimentSpec, SpecError, load_spec, write_spec

__version__ = "0.1.0"

__all__ = [
    "ExperimentResults",
    "ExperimentSpec",
    "IterationOutcome",
    "MetricTable",
    "SpecError",
    "Status",
    "TrueEffects",
    "analyze",
    "analyze_files",
    "assign",
    "assign_recipients",
    "compute_metrics",
    "data_fingerprint",
    "decide",
    "load_spec",
    "next_spec",
    "run_iteration",
    "sample_size_per_variant",
    "simulate_campaign",
    "write_send_lists",
    "write_spec",
]
