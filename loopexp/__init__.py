"""loopexp: closed-loop email experimentation.

Plan a mailing, send it, measure, analyse, decide, and feed what was learned into the next mailing.
The sub-packages are the loop's stages, each importing only the stages listed before it
(``tests/test_architecture.py`` enforces the order):

- :mod:`loopexp.core`: errors, configuration (``LOOPEXP_*``), tag names, keyed hashing, workers.
- :mod:`loopexp.stats`: tests, intervals, Bayesian summaries, multiplicity, SRM (no engine).
- :mod:`loopexp.events`: provider adapters (a registry) and ingest into the canonical event table.
- :mod:`loopexp.metrics`: metric definitions compiled per SQL dialect; DuckDB and Spark engines.
- :mod:`loopexp.design`: experiment specs (YAML, pydantic) and power planning.
- :mod:`loopexp.assignment`: recipient lists, salted-hash assignment and send lists.
- :mod:`loopexp.analysis`: results (``results.json``) and the decision.
- :mod:`loopexp.learn`: the next iteration's spec, send-time windows, adaptive weights.
- :mod:`loopexp.report`: views of results for people (tables, HTML, figures).
- :mod:`loopexp.track`: MLflow runs, the closed-loop history (the only place mlflow is imported).
- :mod:`loopexp.run`: one scheduled iteration end to end; papermill execution.
- :mod:`loopexp.sim`: simulated campaigns, the Hillstrom data, the multi-iteration demo.
- :mod:`loopexp.cli`: the ``loopexp`` command.

``import loopexp`` is light: the public names below load their modules (and DuckDB, scipy,
statsmodels, MLflow, papermill) on first use, so ``loopexp --help`` and the webhook receiver start
fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it; resolved on first attribute access (PEP 562).
_PUBLIC: dict[str, str] = {
    "ExperimentResults": "loopexp.analysis.results",
    "ExperimentSpec": "loopexp.design.spec",
    "IterationOutcome": "loopexp.run.pipeline",
    "MetricTable": "loopexp.metrics.engine",
    "SpecError": "loopexp.design.spec",
    "Status": "loopexp.analysis.results",
    "TrueEffects": "loopexp.sim.simulate",
    "analyze": "loopexp.analysis.analyze",
    "analyze_files": "loopexp.analysis.analyze",
    "assign": "loopexp.assignment.assign",
    "assign_recipients": "loopexp.assignment.assign",
    "compute_metrics": "loopexp.metrics.engine",
    "data_fingerprint": "loopexp.analysis.analyze",
    "decide": "loopexp.analysis.decide",
    "load_spec": "loopexp.design.spec",
    "next_spec": "loopexp.learn.iteration",
    "run_iteration": "loopexp.run.pipeline",
    "sample_size_per_variant": "loopexp.design.plan",
    "simulate_campaign": "loopexp.sim.simulate",
    "write_send_lists": "loopexp.assignment.assign",
    "write_spec": "loopexp.design.spec",
}

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


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'loopexp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from loopexp.analysis.analyze import analyze, analyze_files, data_fingerprint
    from loopexp.analysis.decide import decide
    from loopexp.analysis.results import ExperimentResults, Status
    from loopexp.assignment.assign import assign, assign_recipients, write_send_lists
    from loopexp.design.plan import sample_size_per_variant
    from loopexp.design.spec import ExperimentSpec, SpecError, load_spec, write_spec
    from loopexp.learn.iteration import next_spec
    from loopexp.metrics.engine import MetricTable, compute_metrics
    from loopexp.run.pipeline import IterationOutcome, run_iteration
    from loopexp.sim.simulate import TrueEffects, simulate_campaign
