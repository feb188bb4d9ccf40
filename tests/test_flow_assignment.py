"""Assignment at entry into a flow's split: sticky, salted by the split node, recency-checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopexp.assignment.assign import groups_from_buckets, unit_interval
from loopexp.assignment.flow import assign_flow_entries
from loopexp.core.errors import InputError
from loopexp.design.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec(ROOT / "experiments" / "welcome_flow_timing.yaml")


def _entries(keys: list[str], days: list[float], segment: str = "prospect") -> pd.DataFrame:
    start = pd.Timestamp("2026-03-02T09:00:00Z")
    return pd.DataFrame(
        {
            "recipient_key": keys,
            "entered_at": [start + pd.Timedelta(days=d) for d in days],
            "segment": segment,
        }
    )


def test_arm_is_the_salted_hash_of_key_and_split_node_and_sticky_on_reentry() -> None:
    keys = [f"k{i}" for i in range(2000)]
    out = assign_flow_entries(_entries(keys + keys[:50], [0] * 2000 + [200] * 50), SPEC)
    a = out.assignment
    assert len(a) == 2000 and len(out.entries) == 2050  # re-entries after 90 days count
    expected = groups_from_buckets(unit_interval(f"{SPEC.salt}:timing", keys), SPEC)
    assert a.set_index("recipient_key").loc[keys, "variant_id"].tolist() == list(expected)
    again = out.entries.groupby("recipient_key")["variant_id"].nunique()
    assert (again == 1).all()  # sticky
    # the split node is part of the salt: another node's split is independent
    other = groups_from_buckets(unit_interval(f"{SPEC.salt}:other", keys), SPEC)
    assert 0.4 < np.mean(other == expected) < 0.6
    shares = a["variant_id"].value_counts(normalize=True)
    assert shares["wait_1d"] == pytest.approx(0.5, abs=0.04)
    assert set(a["propensity"]) == {0.5}
    assert set(a["flow_version"]) == {SPEC.flow.version()}
    assert (a["entered_at"] == pd.Timestamp("2026-03-02T09:00:00Z")).all()  # the first entry


def test_recency_rule_drops_reentries_within_n_days_and_counts_them() -> None:
    out = assign_flow_entries(_entries(["a", "a", "a", "b"], [0, 30, 130, 5]), SPEC)
    assert out.excluded == {"recent_reentry": 1}
    assert out.entries["recipient_key"].tolist() == ["a", "a", "b"]


def test_lifecycle_groups_are_segments_and_labels_map() -> None:
    out = assign_flow_entries(_entries(["a"], [0], "new_customer"), SPEC)
    assert out.assignment["segment"].tolist() == ["new_customer"]
    with pytest.raises(InputError, match=r"segment label\(s\) \['VIP'\].*segment_map"):
        assign_flow_entries(_entries(["a"], [0], "VIP"), SPEC)


def test_bad_entries_say_what_to_fix() -> None:
    with pytest.raises(InputError, match=r"lack column\(s\) \['entered_at'\]"):
        assign_flow_entries(pd.DataFrame({"recipient_key": ["a"], "segment": ["prospect"]}), SPEC)
    bad = _entries(["a", "b"], [0, 1]).astype({"entered_at": object})
    bad.loc[1, "entered_at"] = "yesterday"
    with pytest.raises(InputError, match=r"1 entered_at value\(s\) are not times \(first: row 2\)"):
        assign_flow_entries(bad, SPEC)
    with pytest.raises(InputError, match="without a recipient_key"):
        assign_flow_entries(_entries(["", "b"], [0, 1]), SPEC)


def test_loopexp_assign_takes_flow_entries(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loopexp.cli import app

    entries = _entries(["a", "a", "b", "c"], [0, 1, 2, 3])
    entries["entered_at"] = entries["entered_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    entries.to_csv(tmp_path / "entries.csv", index=False)
    spec = str(ROOT / "experiments" / "welcome_flow_timing.yaml")
    args = ["assign", spec, "--recipients", str(tmp_path / "entries.csv")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"recent_reentry": 1' in result.output and '"recipients": 3' in result.output
    written = pd.read_parquet(tmp_path / "out" / "assignment.parquet")
    assert {"entered_at", "propensity", "flow_version"} <= set(written.columns)
