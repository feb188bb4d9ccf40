"""The ``results.json`` contract (DESIGN.md, schema_version "1"): other tools read these names.

Extending the contract is fine; renaming or dropping a field fails here.
"""

from __future__ import annotations

import json

import numpy as np

from loopexp import ExperimentResults, analyze, load_spec
from loopexp.metrics.engine import GroupStats, MetricTable
from tests.conftest import DEMO_SPEC

CONTRACT = {
    "top": {
        "schema_version",
        "experiment",
        "data",
        "srm",
        "variants",
        "comparisons",
        "segments",
        "decision",
    },
    "experiment": {"name", "campaign", "iteration", "test_type", "spec_sha256"},
    "data": {"source", "fingerprint", "recipients", "events", "quarantined"},
    "srm": {"p_value", "ok", "expected", "observed"},
    "variant": {"id", "is_control", "n", "metrics"},
    "metric_value": {"value", "numerator", "denominator"},
    "comparison": {
        "metric",
        "variant",
        "control",
        "estimate",
        "rel_lift",
        "ci_low",
        "ci_high",
        "rel_ci_low",
        "rel_ci_high",
        "p_value",
        "p_value_adjusted",
        "prob_beat_control",
        "expected_loss",
        "method",
    },
    "segment": {"segment", "variants", "comparisons"},
    "decision": {"status", "winner", "primary_metric", "reasons", "guardrails"},
}


def _results() -> ExperimentResults:
    spec = load_spec(DEMO_SPEC)
    rng = np.random.default_rng(3)
    stats = []
    for segment in ("all", "prospect", "inactive"):
        n = 6_000 if segment == "all" else 3_000
        for v in spec.variants:
            for metric in spec.all_metrics:
                successes = float(rng.binomial(n, 0.05))
                stats.append(GroupStats(metric, v.id, segment, n, successes, successes))
    table = MetricTable(
        stats=stats, assigned={v.id: 6_000 for v in spec.variants}, events=10, quarantined=0
    )
    return analyze(spec, table, source="synthetic", fingerprint="abc")


def test_results_json_has_every_contract_field(tmp_path):
    path = _results().write_json(tmp_path / "results.json")
    doc = json.loads(path.read_text())
    assert CONTRACT["top"] <= set(doc)
    assert doc["schema_version"] == "1"
    assert CONTRACT["experiment"] <= set(doc["experiment"])
    assert CONTRACT["data"] <= set(doc["data"])
    assert CONTRACT["srm"] <= set(doc["srm"])
    assert CONTRACT["decision"] <= set(doc["decision"])
    assert doc["variants"] and doc["comparisons"] and doc["segments"]
    for variant in doc["variants"]:
        assert CONTRACT["variant"] <= set(variant)
        for value in variant["metrics"].values():
            assert CONTRACT["metric_value"] <= set(value)
    for comparison in doc["comparisons"]:
        assert CONTRACT["comparison"] <= set(comparison)
    for segment in doc["segments"]:
        assert CONTRACT["segment"] <= set(segment)
        assert all(CONTRACT["comparison"] <= set(c) for c in segment["comparisons"])
    assert {s["segment"] for s in doc["segments"]} == {"prospect", "inactive"}


def test_results_json_round_trips_and_rejects_other_versions(tmp_path):
    results = _results()
    path = results.write_json(tmp_path / "results.json")
    assert ExperimentResults.read_json(path) == results
    doc = json.loads(path.read_text())
    doc["schema_version"] = "2"
    path.write_text(json.dumps(doc))
    try:
        ExperimentResults.read_json(path)
    except ValueError as exc:
        assert "schema_version" in str(exc) and str(path) in str(exc)
    else:
        raise AssertionError("a results.json of another schema version must be refused")
