"""Tests of deterministic assignment (loopexp.assignment.assign)."""

from __future__ import annotations

import hashlib
import importlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopexp.assignment.assign import (
    HOLDOUT,
    assign,
    assign_groups,
    unit_interval,
    write_send_lists,
)
from loopexp.design.spec import ExperimentSpec
from loopexp.stats import srm_check

# ``loopexp.assignment.assign`` the attribute is the function (re-exported by the package); get the
# module.
assign_mod = importlib.import_module("loopexp.assignment.assign")


def make_spec(
    weights: dict[str, float] | None = None,
    holdout: float = 0.0,
    salt: str = "test-salt",
    segments: list[str] | None = None,
) -> ExperimentSpec:
    weights = weights or {"control": 1.0, "b": 1.0, "c": 1.0}
    audience: dict = {"holdout": holdout}
    if segments is not None:
        audience["segments"] = segments
    return ExperimentSpec.model_validate(
        {
            "name": "assign-test",
            "campaign": "assign-test",
            "test_type": "subject_line",
            "salt": salt,
            "control": next(iter(weights)),
            "variants": [{"id": k, "weight": w} for k, w in weights.items()],
            "audience": audience,
        }
    )


def reference_u(salt: str, key: str) -> float:
    """Independent re-implementation: top 53 bits of SHA-256("salt:key"), big-endian, / 2**53."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


keys_strategy = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=40, unique=True)
salt_strategy = st.text(min_size=1, max_size=30)


# --- unit_interval ---------------------------------------------------------------------------


def test_unit_interval_golden_value():
    got = unit_interval("salt", ["alice"])
    assert got.shape == (1,)
    assert got[0] == reference_u("salt", "alice")
    # Pinned literals as well, so that a change to both the code and the reference is visible.
    assert hashlib.sha256(b"salt:alice").hexdigest()[:16] == "29b0186358ce0d73"
    assert got[0] == (int("29b0186358ce0d73", 16) >> 11) / 2**53
    assert got[0] == 0.16284325051747583


def test_unit_interval_matches_reference_for_several_keys():
    keys = ["alice", "bob", "", "ünïcødé", "rcp-0000-00000001", "42"]
    got = unit_interval("spring-iter-1", keys)
    assert got.tolist() == [reference_u("spring-iter-1", k) for k in keys]


def test_unit_interval_empty():
    assert unit_interval("s", []).shape == (0,)


def test_unit_interval_stringifies_keys():
    assert unit_interval("s", [123]).tolist() == unit_interval("s", ["123"]).tolist()


@given(salt=salt_strategy, keys=keys_strategy)
def test_unit_interval_in_unit_range_and_matches_reference(salt, keys):
    u = unit_interval(salt, keys)
    assert u.dtype == np.float64
    assert len(u) == len(keys)
    assert np.all(u >= 0.0)
    assert np.all(u < 1.0)
    assert u.tolist() == [reference_u(salt, k) for k in keys]


def test_unit_interval_is_roughly_uniform():
    u = unit_interval("uniformity", [f"k{i}" for i in range(20_000)])
    counts, _ = np.histogram(u, bins=10, range=(0.0, 1.0))
    check = srm_check(
        {str(i): int(c) for i, c in enumerate(counts)}, {str(i): 0.1 for i in range(10)}
    )
    assert check.p_value > 0.001


# --- assign_groups: properties -----------------------------------------------------------------


@given(
    salt=salt_strategy,
    keys=keys_strategy,
    extra=st.lists(st.text(min_size=1, max_size=20), max_size=20),
    perm_seed=st.integers(0, 2**32 - 1),
    holdout=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_assignment_deterministic_and_independent_of_order_and_other_keys(
    salt, keys, extra, perm_seed, holdout
):
    spec = make_spec({"control": 1.0, "b": 2.0, "c": 0.5}, holdout=holdout, salt=salt)
    base = dict(zip(keys, assign_groups(keys, spec), strict=True))
    # Same call twice: same answer.
    assert dict(zip(keys, assign_groups(keys, spec), strict=True)) == base
    # Shuffled, with other keys mixed in: every original key keeps its group.
    mixed = keys + [e for e in extra if e not in base]
    order = np.random.default_rng(perm_seed).permutation(len(mixed))
    shuffled = [mixed[i] for i in order]
    again = dict(zip(shuffled, assign_groups(shuffled, spec), strict=True))
    assert {k: again[k] for k in keys} == base
    # Each key alone: same group as in the list.
    for k in keys[:5]:
        assert assign_groups([k], spec)[0] == base[k]


@given(
    salt=salt_strategy,
    keys=keys_strategy,
    weights=st.lists(st.floats(0.01, 100.0), min_size=2, max_size=5),
    holdout=st.one_of(st.just(0.0), st.floats(0.0, 0.95)),
)
def test_assignment_only_valid_groups_and_exact_holdout_rule(salt, keys, weights, holdout):
    ids = ["control", *(f"v{i}" for i in range(1, len(weights)))]
    spec = make_spec(dict(zip(ids, weights, strict=True)), holdout=holdout, salt=salt)
    labels = assign_groups(keys, spec)
    assert len(labels) == len(keys)
    valid = set(ids) | ({HOLDOUT} if holdout > 0 else set())
    assert set(labels) <= valid
    u = unit_interval(salt, keys)
    # Holdout is exactly the keys whose hash falls below the holdout share.
    assert [lab == HOLDOUT for lab in labels] == [x < holdout for x in u]
    # The mailed part is split by cumulative weight, in variant order.
    w = np.array(weights) / sum(weights)
    edges = holdout + (1 - holdout) * np.cumsum(w)
    for x, lab in zip(u, labels, strict=True):
        if x < holdout:
            continue
        expected = ids[min(int(np.searchsorted(edges, x, side="right")), len(ids) - 1)]
        assert lab == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(holdout=st.floats(0.05, 0.6))
def test_holdout_share_respected(holdout):
    keys = [f"user-{i}" for i in range(8_000)]
    labels = assign_groups(keys, make_spec(holdout=holdout, salt="holdout-share"))
    share = np.mean(labels == HOLDOUT)
    # sd <= sqrt(0.25 / 8000) ~ 0.0056; 0.03 is > 5 sd.
    assert abs(share - holdout) < 0.03


def test_no_holdout_group_without_holdout():
    labels = assign_groups([f"k{i}" for i in range(5_000)], make_spec(holdout=0.0))
    assert HOLDOUT not in set(labels)
    assert set(labels) == {"control", "b", "c"}


@settings(max_examples=20, deadline=None)
@given(salts=st.lists(salt_strategy, min_size=2, max_size=2, unique=True))
def test_different_salts_rerandomise(salts):
    keys = [f"member-{i}" for i in range(3_000)]
    a = assign_groups(keys, make_spec(salt=salts[0]))
    b = assign_groups(keys, make_spec(salt=salts[1]))
    agreement = float(np.mean(a == b))
    # Independent 3-arm equal splits agree 1/3 of the time; sd ~ 0.0086 at n = 3000.
    assert abs(agreement - 1 / 3) < 0.05


def test_same_salt_different_spec_name_same_groups():
    keys = [f"k{i}" for i in range(500)]
    a = assign_groups(keys, make_spec(salt="shared"))
    spec_b = make_spec(salt="shared").model_copy(update={"name": "other name"})
    assert (assign_groups(keys, spec_b) == a).all()


def test_weights_scale_invariant():
    keys = [f"k{i}" for i in range(2_000)]
    a = assign_groups(keys, make_spec({"control": 1, "b": 1, "c": 2}, holdout=0.1))
    b = assign_groups(keys, make_spec({"control": 5, "b": 5, "c": 10}, holdout=0.1))
    assert (a == b).all()


def test_boundaries_of_the_buckets(monkeypatch):
    # weights 1:1:2 with holdout 0.2: holdout [0, .2), control [.2, .4), b [.4, .6), c [.6, 1).
    spec = make_spec({"control": 1, "b": 1, "c": 2}, holdout=0.2)
    edges = 0.2 + 0.8 * np.cumsum([0.25, 0.25, 0.5])
    u = np.array(
        [
            0.0,
            np.nextafter(0.2, 0),
            0.2,
            np.nextafter(edges[0], 0),
            edges[0],
            np.nextafter(edges[1], 0),
            edges[1],
            np.nextafter(1.0, 0),
            1.0,  # cannot come out of an 8-byte hash in practice; still a mailed variant
        ]
    )
    monkeypatch.setattr(assign_mod, "unit_interval", lambda salt, keys: u)
    labels = assign_groups([str(i) for i in range(len(u))], spec)
    assert labels.tolist() == [
        HOLDOUT,
        HOLDOUT,
        "control",
        "control",
        "b",
        "b",
        "c",
        "c",
        "c",
    ]


def test_split_passes_chi_square_for_60000_keys():
    spec = make_spec({"control": 1, "b": 1, "c": 2}, holdout=0.1, salt="chi-square")
    keys = [f"rcp-{i:08d}" for i in range(60_000)]
    labels = assign_groups(keys, spec)
    observed = dict(zip(*np.unique(labels, return_counts=True), strict=True))
    observed = {str(k): int(v) for k, v in observed.items()}
    expected = {"holdout": 0.1, "control": 0.225, "b": 0.225, "c": 0.45}
    assert spec.expected_shares() == pytest.approx(expected)
    assert set(observed) == set(expected)
    assert sum(observed.values()) == 60_000
    check = srm_check(observed, expected)
    assert check.p_value > 0.001
    assert check.ok
    # And the test is able to fail: a visibly broken split is flagged.
    broken = dict(observed, holdout=observed["holdout"] + 1_000, c=observed["c"] - 1_000)
    assert srm_check(broken, expected).p_value < 0.001


# --- assign (recipient tables) -----------------------------------------------------------------


def recipients_frame() -> pd.DataFrame:
    n = 400
    segs = ["prospect", "new_customer", "existing_customer", "inactive"]
    return pd.DataFrame(
        {
            "recipient_key": [f"r{i:04d}" for i in range(n)],
            "segment": [segs[i % 4] for i in range(n)],
            "email": [f"r{i}@example.com" for i in range(n)],
        }
    )


def test_assign_returns_keys_segments_groups_in_input_order():
    recipients = recipients_frame().iloc[::-1].reset_index(drop=True)
    spec = make_spec(holdout=0.1)
    out = assign(recipients, spec)
    # propensity (issue 27): the probability of the recipient's own group, extending the columns
    assert list(out.columns) == ["recipient_key", "segment", "variant_id", "propensity"]
    assert out["recipient_key"].tolist() == recipients["recipient_key"].tolist()
    assert out["segment"].tolist() == recipients["segment"].tolist()
    assert out["variant_id"].tolist() == assign_groups(recipients["recipient_key"], spec).tolist()
    assert out.index.tolist() == list(range(len(recipients)))


def test_assign_filters_segments():
    recipients = recipients_frame()
    spec = make_spec(segments=["new_customer", "inactive"])
    out = assign(recipients, spec)
    assert set(out["segment"]) == {"new_customer", "inactive"}
    assert len(out) == 200
    kept = recipients[recipients["segment"].isin(["new_customer", "inactive"])]
    assert out["recipient_key"].tolist() == kept["recipient_key"].tolist()
    # A recipient's group does not depend on who else is in the audience.
    full = assign(recipients, make_spec()).set_index("recipient_key")["variant_id"]
    assert out.set_index("recipient_key")["variant_id"].equals(full.loc[out["recipient_key"]])


def test_assign_duplicate_key_error_message():
    recipients = recipients_frame()
    dup = pd.concat([recipients, recipients.iloc[[3, 7]]], ignore_index=True)
    with pytest.raises(ValueError, match="recipient_key must be unique") as info:
        assign(dup, make_spec())
    assert "r0003" in str(info.value)
    assert "r0007" in str(info.value)


def test_assign_duplicates_outside_audience_are_ignored():
    recipients = recipients_frame()
    prospect_dup = recipients[recipients["segment"] == "prospect"].iloc[[0]]
    dup = pd.concat([recipients, prospect_dup], ignore_index=True)
    out = assign(dup, make_spec(segments=["inactive"]))
    assert (out["segment"] == "inactive").all()


@pytest.mark.parametrize("missing", ["recipient_key", "segment"])
def test_assign_missing_column_error_message(missing):
    recipients = recipients_frame().drop(columns=[missing])
    with pytest.raises(ValueError, match="lacks column") as info:
        assign(recipients, make_spec())
    assert repr(missing) in str(info.value)
    assert "needs recipient_key and segment" in str(info.value)


# --- write_send_lists --------------------------------------------------------------------------


def test_write_send_lists(tmp_path):
    spec = make_spec(holdout=0.2)
    assignment = assign(recipients_frame(), spec)
    folder = tmp_path / "nested" / "lists"
    paths = write_send_lists(assignment, folder)
    assert set(paths) == {"control", "b", "c"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "send_list_b.csv",
        "send_list_c.csv",
        "send_list_control.csv",
    ]
    seen: list[str] = []
    for variant, path in paths.items():
        assert path == folder / f"send_list_{variant}.csv"
        frame = pd.read_csv(path)
        assert list(frame.columns) == ["recipient_key", "segment"]
        expected = assignment[assignment["variant_id"] == variant]
        assert frame["recipient_key"].tolist() == expected["recipient_key"].tolist()
        assert frame["segment"].tolist() == expected["segment"].tolist()
        seen += frame["recipient_key"].tolist()
    mailed = assignment.loc[assignment["variant_id"] != HOLDOUT, "recipient_key"]
    assert sorted(seen) == sorted(mailed)
    assert (assignment["variant_id"] == HOLDOUT).sum() > 0  # holdout existed, got no list
