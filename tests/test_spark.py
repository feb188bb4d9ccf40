"""The Spark engine (local mode) against DuckDB on the same data: identical sufficient statistics.

One SparkSession for the module (local[2], 2 shuffle partitions), small data: the point is that the
same compiled definitions give the same numbers, not speed (that is bench/'s job).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopexp.design.spec import load_spec
from loopexp.metrics import (
    LIBRARY,
    Measure,
    MetricDef,
    compute_metrics,
    compute_outcome_metrics,
    link_clicks,
)
from loopexp.sim.datasets import hillstrom_outcomes
from loopexp.sim.simulate import simulate_campaign

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # CI installs Java (.ci/run); a laptop without it skips
    pytest.skip("the Spark engine needs Java 17 on PATH", allow_module_level=True)

from loopexp.metrics.spark import (
    compute_metrics_spark,
    compute_outcome_metrics_spark,
    link_clicks_spark,
    spark_session,
)
from tests.conftest import assert_same_tables

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-9


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> tuple[Path, Path]:
    """A simulated send (holdout, machine opens, bot clicks) plus a duplicate and bad rows."""
    spec = load_spec(ROOT / "experiments" / "subject_line_demo.yaml")
    spec = spec.model_copy(update={"audience": spec.audience.model_copy(update={"holdout": 0.1})})
    sim = simulate_campaign(spec, 3_000, seed=11)
    events = sim.events.copy()
    extra = events.iloc[[5, 9]].copy()
    extra["ts"] = extra["ts"] + pd.Timedelta(hours=1)  # later duplicates: quarantined
    bad = events.iloc[[3]].copy()
    bad["event_type"] = "bogus"
    bad["event_id"] = "bad-1"
    events = pd.concat([events, extra, bad], ignore_index=True)
    rng = np.random.default_rng(2)
    assignment = sim.assignment.assign(pre_clicks=rng.poisson(1.0, len(sim.assignment)) * 1.0)
    folder = tmp_path_factory.mktemp("spark-data")
    events.to_parquet(folder / "events.parquet", index=False, coerce_timestamps="us")
    assignment.to_parquet(folder / "assignment.parquet", index=False)
    return folder / "events.parquet", folder / "assignment.parquet"


def custom_defs() -> list[MetricDef]:
    return [
        *LIBRARY.values(),
        MetricDef(
            name="revenue_48h_capped",
            kind="mean",
            numerator=Measure(
                events=["order"],
                aggregate="sum_revenue",
                window={"hours": 48, "after": "delivered"},
                cap=80,
            ),
            denominator="delivered",
            covariates=["pre_clicks"],
        ),
        MetricDef(
            name="clicks_per_opener",
            kind="ratio",
            numerator=Measure(events=["click"], aggregate="count"),
            ratio_denominator=Measure(events=["open"]),
            denominator="opened",
            covariates=["pre_clicks"],
        ),
    ]


def test_events_on_spark_equal_duckdb(spark, campaign):
    events, assignment = campaign
    defs = custom_defs()
    duck = compute_metrics(events, assignment, defs)
    on_spark = compute_metrics_spark(events, assignment, defs, spark)
    assert duck.quarantined == 3  # two duplicates, one unknown type: the checks are not vacuous
    assert duck.get("revenue_48h_capped", "control").sum > 0
    assert duck.get("clicks_per_opener", "control").den_sum > 0
    assert_same_tables(duck, on_spark)


def test_percentile_caps_on_spark_equal_duckdb(spark, campaign):
    """Spark computes the caps itself (exact percentile = DuckDB's quantile_cont) and applies
    them through the same least(): caps and capped statistics agree."""
    events, assignment = campaign
    defs = custom_defs()
    caps = {d.name: 0.9 for d in defs if d.kind == "mean"}
    duck = compute_metrics(events, assignment, defs, caps=caps)
    on_spark = compute_metrics_spark(events, assignment, defs, spark, caps=caps)
    # per population: delivered, sent, assigned (holdout pooled) and a static cap of 80 kept
    assert {"revenue_per_delivered", "revenue_per_recipient", "revenue_per_assigned"} <= set(
        duck.caps
    )
    assert duck.caps.keys() == on_spark.caps.keys()
    for name, value in duck.caps.items():
        assert math.isclose(value, on_spark.caps[name], rel_tol=1e-12), name
    uncapped = compute_metrics(events, assignment, defs)
    assert (
        duck.get("revenue_per_delivered", "control").sum
        < uncapped.get("revenue_per_delivered", "control").sum
    )
    assert_same_tables(duck, on_spark)


def test_outcome_table_on_spark_equals_duckdb(spark):
    spec = load_spec(ROOT / "experiments" / "hillstrom_outcomes.yaml")
    table = hillstrom_outcomes(None)
    assert_same_tables(
        compute_outcome_metrics(table, spec.metric_defs),
        compute_outcome_metrics_spark(table, spec.metric_defs, spark),
    )


def test_outcome_table_percentile_caps_on_spark_equal_duckdb(spark):
    spec = load_spec(ROOT / "experiments" / "hillstrom_outcomes.yaml")
    table = hillstrom_outcomes(None)
    caps = {"spend_per_customer": 0.9, "spend_per_customer_capped": 0.99}
    duck = compute_outcome_metrics(table, spec.metric_defs, caps=caps)
    on_spark = compute_outcome_metrics_spark(table, spec.metric_defs, spark, caps=caps)
    assert duck.caps.keys() == on_spark.caps.keys() == caps.keys()
    for name, value in duck.caps.items():
        assert math.isclose(value, on_spark.caps[name], rel_tol=1e-12), name
    assert_same_tables(duck, on_spark)


def test_link_clicks_on_spark_equal_duckdb(spark, campaign):
    events, assignment = campaign
    duck = link_clicks(events, assignment)
    on_spark = link_clicks_spark(events, assignment, spark)
    assert len(duck) > 3
    pd.testing.assert_frame_equal(duck, on_spark, rtol=TOL)


def test_spark_session_reuses_the_active_one(spark):
    assert spark_session() is spark
