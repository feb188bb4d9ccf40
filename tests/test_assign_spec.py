"""The spec additions for assignment: audience columns and mapping, new test types, factorials."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from loopexp.assignment.assign import assign_recipients
from loopexp.design.parts import TestType
from loopexp.design.spec import ExperimentSpec, SpecError, load_spec, parse_spec
from loopexp.stats import srm_check
from tests.conftest import DEMO_SPEC

# The demo spec's fingerprint before the fields of issue 14 existed (computed at c9547a3): a spec
# that does not use them must keep it, or every recorded run would lose its lineage.
DEMO_SHA256_BEFORE = "18589c1cedf2ff0f9f7045ad9e1fa2641da6761364b2a596c9026810536af22d"
NEW_AUDIENCE = ("segment_map", "unmapped_segments", "columns", "filters",
                "exclude_tested_within_days")  # fmt: skip
NEW_VARIANT = ("preheader", "from_name", "cell")


def fingerprint_without_new_fields(spec: ExperimentSpec) -> str:
    """What ``sha256()`` computed before issue 14: canonical JSON of the spec without its fields."""
    data = json.loads(spec.model_dump_json())
    for name in NEW_AUDIENCE:
        data["audience"].pop(name)
    for variant in data["variants"] + data["backlog"]:
        for name in NEW_VARIANT:
            variant.pop(name)
    data.pop("factors")
    data.pop("send_time")  # issue 18
    data.pop("events")  # issue 14's export folder for `run`, left out while None
    data.pop("allocation")  # issue 23's adaptive weights for scheduled runs, left out while None
    data.pop("flow")  # issue 26's automation-flow section, left out while None
    data.pop("policy")  # issue 27's per-recipient policy, left out while None
    if not data.get("metrics"):  # issue 16's own-metrics field, also left out at its default
        data.pop("metrics", None)
    data["decision"].pop("read_at")  # issue 28's read time of a one-off send, left out while None
    data["data"].pop("history")  # issue 28's event history (MPP opens), left out while None
    data["data"].pop("campaign_ids")  # issue 28's provider campaign ids, left out while empty
    canonical = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    assert canonical != spec.model_dump_json()  # the new fields were there to remove
    return hashlib.sha256(canonical.encode()).hexdigest()


FACTORIAL = """
name: spring-mvt
campaign: spring
test_type: multivariate
salt: spring-mvt-1
factors:
  - name: subject
    levels:
      - id: plain
        subject: "The spring collection is here"
      - id: personal
        subject: "{first_name}, your spring picks"
  - name: content
    levels:
      - id: grid
        content: grid.html
      - id: story
        content: story.html
        preheader: "A story in three looks"
"""


def test_fingerprint_unchanged_for_specs_without_the_new_fields():
    spec = load_spec(DEMO_SPEC)
    assert spec.sha256() == fingerprint_without_new_fields(spec)
    if "data" not in ExperimentSpec.model_fields:  # before other issues' fields were added too
        assert spec.sha256() == DEMO_SHA256_BEFORE
    data = yaml.safe_load(DEMO_SPEC.read_text())
    for change in (
        {"audience": {**data["audience"], "segment_map": {"VIP": "existing_customer"}}},
        {"audience": {**data["audience"], "exclude_tested_within_days": 30}},
        {"audience": {**data["audience"], "columns": {"email": "Email"}}},
        {"variants": [{**data["variants"][0], "preheader": "Hi"}, *data["variants"][1:]]},
    ):
        changed = ExperimentSpec.model_validate({**data, **change})
        assert changed.sha256() != spec.sha256(), change
    # Setting a new field to its default is the same spec.
    same = {**data, "audience": {**data["audience"], "unmapped_segments": "error"}}
    assert ExperimentSpec.model_validate(same).sha256() == spec.sha256()


@pytest.mark.parametrize("test_type", ["preheader", "from_name"])
def test_preheader_and_from_name_tests_round_trip(test_type):
    field = test_type
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["test_type"] = test_type
    data["variants"] = [
        {"id": "control", field: "Ana from Shop"},
        {"id": "b", field: "The Shop team"},
    ]
    spec = ExperimentSpec.model_validate(data)
    assert spec.test_type == TestType(test_type)
    again = parse_spec(spec.to_yaml())
    assert [getattr(v, field) for v in again.variants] == ["Ana from Shop", "The Shop team"]
    assert again.sha256() == spec.sha256()


def test_bad_segment_map_value_is_located():
    lines = DEMO_SPEC.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  holdout:")) + 1
    text = "\n".join([*lines[:at], "  segment_map:", "    VIP: vip_customer", *lines[at:]])
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="spec.yaml")
    message = str(info.value)
    assert "audience.segment_map.VIP" in message
    line = text.splitlines().index("    VIP: vip_customer") + 1
    assert f"line {line}:" in message


def test_factorial_cells_are_generated():
    spec = parse_spec(FACTORIAL)
    assert [v.id for v in spec.variants] == [
        "plain-grid",
        "plain-story",
        "personal-grid",
        "personal-story",
    ]
    assert spec.control == "plain-grid"
    cell = {v.id: v for v in spec.variants}["personal-story"]
    assert cell.cell == {"subject": "personal", "content": "story"}
    assert cell.subject == "{first_name}, your spring picks"
    assert cell.content == "story.html"
    assert cell.preheader == "A story in three looks"
    assert cell.description == "subject=personal, content=story"
    # Written out and read back, the spec is the same (variants included, still cells).
    assert parse_spec(spec.to_yaml()).sha256() == spec.sha256()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(test_type="subject_line"), "belongs to test_type multivariate"),
        (
            lambda d: d.update(factors=None, variants=[{"id": "a"}, {"id": "b"}], control="a"),
            "needs `factors:`",
        ),
        (
            lambda d: d["factors"][1]["levels"][0].update(subject="clash"),
            "two factors set 'subject'",
        ),
        (
            lambda d: d.update(variants=[{"id": "a"}, {"id": "b"}], control="a"),
            "cells of its factors",
        ),
        (lambda d: d["factors"][1].update(name="subject"), "factor names must be unique"),
    ],
)
def test_factorial_errors(edit, message):
    data = yaml.safe_load(FACTORIAL)
    edit(data)
    with pytest.raises(SpecError, match=message):
        parse_spec(yaml.safe_dump(data))


def test_factorial_assignment_is_balanced_over_cells_and_factors():
    spec = parse_spec(FACTORIAL)
    n = 40_000
    segments = np.array(["prospect", "inactive"], dtype=object)
    frame = pd.DataFrame(
        {"recipient_key": [f"f-{i}" for i in range(n)], "segment": segments[np.arange(n) % 2]}
    )
    result = assign_recipients(frame, spec)
    counts = result.summary.groups
    assert set(counts) == {v.id for v in spec.variants}
    assert srm_check(counts, spec.expected_shares()).ok
    # Each factor's levels get half the audience.
    subject = result.assignment["variant_id"].str.split("-").str[0]
    assert abs((subject == "plain").mean() - 0.5) < 0.01
