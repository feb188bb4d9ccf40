"""Censoring of immature outcomes on Spark equals DuckDB's (one compiled SQL, two dialects)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopexp.design.spec import load_spec
from loopexp.metrics import compute_metrics
from loopexp.sim.simulate import DEMO_EFFECTS, simulate_campaign, write_events
from tests.test_maturity import SENT
from tests.test_send_scope_srm import in_batches

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # CI installs Java (.ci/run); a laptop without it skips
    pytest.skip("the Spark engine needs Java 17 on PATH", allow_module_level=True)

from loopexp.metrics.spark import compute_metrics_spark
from tests.conftest import DEMO_SPEC, assert_same_tables


def test_censoring_on_spark_equals_duckdb(spark, tmp_path: Path) -> None:
    spec = load_spec(DEMO_SPEC)
    campaign = simulate_campaign(spec, 3_000, DEMO_EFFECTS, seed=4, send_at=SENT)
    events, assignment = campaign.as_of(SENT + timedelta(hours=100)).write(tmp_path)
    defs = ["click_rate", "conversion_rate", "delivery_rate", "unsubscribe_rate"]
    for hours in (30, 76, 100):  # nobody matured; clicks matured, orders not; most matured
        as_of = SENT + timedelta(hours=hours)
        duck = compute_metrics(events, assignment, defs, as_of=as_of)
        on_spark = compute_metrics_spark(events, assignment, defs, spark, as_of=as_of)
        assert_same_tables(duck, on_spark)
        assert duck.last_sent_at == on_spark.last_sent_at is not None
    click, orders = duck.get("click_rate", "control"), duck.get("conversion_rate", "control")
    assert click.n > 0 and orders.n == 0  # at 100 h: the 72 h window closed, the 7 days not
    # the SRM over time: recipients per day of enrolment, from the assignment
    enrolled = pd.read_parquet(assignment)
    days = np.random.default_rng(0).integers(0, 4, len(enrolled))
    at = pd.Timestamp(SENT) + pd.to_timedelta(days * 24 + 5, unit="h")
    enrolled["enrolled_at"] = at.astype("datetime64[us, UTC]")  # Spark reads no nanoseconds
    enrolled.to_parquet(tmp_path / "enrolled.parquet")
    duck = compute_metrics(events, tmp_path / "enrolled.parquet", ["click_rate"])
    on_spark = compute_metrics_spark(events, tmp_path / "enrolled.parquet", ["click_rate"], spark)
    assert duck.assigned_by_period == on_spark.assigned_by_period
    assert len(duck.assigned_by_period) == 4
    assert sum(sum(v.values()) for v in duck.assigned_by_period.values()) == 3_000
    # the SRM per send batch (the hour of each recipient's first send), from the same pass
    moved, _ = in_batches(pd.read_parquet(events), 3)
    write_events(moved, tmp_path / "batched.parquet")
    duck = compute_metrics(tmp_path / "batched.parquet", assignment, ["click_rate"])
    on_spark = compute_metrics_spark(
        tmp_path / "batched.parquet", assignment, ["click_rate"], spark
    )
    assert duck.sent_by_batch == on_spark.sent_by_batch
    assert len(duck.sent_by_batch) == 3
    assert_same_tables(duck, on_spark)
