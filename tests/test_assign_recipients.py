"""Tests of the lossless assignment of a team's recipient list (assign.assign_recipients)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from loopexp.assignment.assign import (
    ASSIGNMENT_COLUMNS,
    HOLDOUT,
    _top53,
    assign_groups,
    assign_recipients,
    unit_interval,
)
from loopexp.assignment.exclusions import ExclusionReason, later_duplicates
from loopexp.assignment.recipients import RecipientsError
from loopexp.cli import app
from loopexp.core.keys import EMAIL_PATTERN, HashKey, HashKeyError, hash_address
from loopexp.design.spec import ExperimentSpec, load_spec
from loopexp.metrics.engine import compute_metrics
from loopexp.stats import srm_check
from tests.conftest import DEMO_SPEC

runner = CliRunner()
KEY = HashKey(b"golden-test-key", "test")
SEGMENTS = ["prospect", "new_customer", "existing_customer", "inactive"]


def make_spec(**audience) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "name": "recipients-test",
            "campaign": "recipients-test",
            "test_type": "subject_line",
            "salt": "recipients-salt",
            "control": "control",
            "variants": [
                {"id": "control", "subject": "Hello", "preheader": "Spring is here"},
                {"id": "b", "subject": "Hi {first_name}", "from_name": "Ana at Shop"},
            ],
            "audience": {"holdout": 0.1, **audience},
        }
    )


def email_list(n: int = 600) -> pd.DataFrame:
    labels = ["Lead", "New", "Customer", "Lapsed"]
    return pd.DataFrame(
        {
            "Email Address": [f"Person.{i}@Example.com" for i in range(n)],
            "Lifecycle": [labels[i % 4] for i in range(n)],
            "DOI": ["yes" if i % 5 else "no" for i in range(n)],
            "Suppressed": ["1" if i % 7 == 0 else "0" for i in range(n)],
            "Country": ["DE" if i % 3 else "FR" for i in range(n)],
        }
    )


TEAM_AUDIENCE = {
    "segment_map": {
        "Lead": "prospect",
        "New": "new_customer",
        "Customer": "existing_customer",
        "Lapsed": "inactive",
    },
    "columns": {
        "email": "Email Address",
        "segment": "Lifecycle",
        "consent": "DOI",
        "suppressed": "Suppressed",
    },
}


# --- golden vectors ----------------------------------------------------------------------------

# SHA-256("spring-newsletter-subject-iter-1:<key>"): first 16 hex digits, their top 53 bits, the
# bucket (top53 / 2**53) and the arm under the demo spec (three equal arms, no holdout). Computed
# once with hashlib (see test_assign.reference_u); pinned so that no change of implementation,
# machine or library can move a recipient.
GOLDEN = [
    ("rcp-0000-00000001", "c52e56411b20b0ef", 6937689800795158, 0.77023829545499, "urgency"),
    ("alice@example.com-hash", "885bad5428ede498", 4797674604010940, 0.5326488810032326,
     "personal"),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "0834c33ddaeeaa89", 288726621838805, 0.032055094338768186,
     "control"),
    ("42", "6881054c69a62f62", 3676907166840005, 0.40821869960350254, "personal"),
    ("ünïcødé", "70c2eb1d31019fc4", 3967439056805939, 0.4404742189663068, "personal"),
    ("cust-00017", "c40613206a947b3d", 6896971831661199, 0.7657176927701402, "urgency"),
    ("x" * 60, "1e6648c2e3d19d78", 1069588999338547, 0.11874823339514362, "control"),
]  # fmt: skip


def test_golden_vectors_bucket_and_arm():
    spec = load_spec(DEMO_SPEC)
    assert spec.salt == "spring-newsletter-subject-iter-1"
    keys = [g[0] for g in GOLDEN]
    for key, hex16, top53, bucket, _ in GOLDEN:
        digest = hashlib.sha256(f"{spec.salt}:{key}".encode()).hexdigest()
        assert digest[:16] == hex16
        assert int(hex16, 16) >> 11 == top53
        assert top53 / 2**53 == bucket
    assert unit_interval(spec.salt, keys).tolist() == [g[3] for g in GOLDEN]
    assert assign_groups(keys, spec).tolist() == [g[4] for g in GOLDEN]
    table = pd.DataFrame({"recipient_key": keys, "segment": "prospect"})
    result = assign_recipients(table, spec)
    assert result.assignment["bucket"].tolist() == [g[3] for g in GOLDEN]
    assert result.assignment["variant_id"].tolist() == [g[4] for g in GOLDEN]


def test_golden_hmac_key_of_an_address():
    # hmac.new(b"golden-test-key", b"alice@example.com", "sha256").hexdigest()[:32]
    assert hash_address("  Alice@Example.com ", KEY) == "1be78456a0854cd8a1735d491da24f8a"
    table = pd.DataFrame({"email": ["  Alice@Example.com "], "segment": ["prospect"]})
    result = assign_recipients(table, make_spec(holdout=0.0), KEY)
    assert result.assignment["recipient_key"].tolist() == ["1be78456a0854cd8a1735d491da24f8a"]


# --- lossless ------------------------------------------------------------------------------------


def reference_reason(rows: pd.DataFrame, spec: ExperimentSpec) -> list[str]:
    """Independent, row-by-row statement of the exclusion rules (first that applies)."""
    suppressed_keys = {r.recipient_key for r in rows.itertuples() if r.recipient_key and r.supp}
    seen: set[str] = set()
    out = []
    allowed = {s.value for s in spec.audience.segments}
    for r in rows.itertuples():
        segment = spec.audience.segment_map.get(r.segment, r.segment)
        if not r.recipient_key:
            out.append("missing_key")
        elif r.recipient_key in suppressed_keys:
            out.append("suppressed")
        elif not r.doi:
            out.append("no_consent")
        elif segment not in SEGMENTS:
            out.append("unmapped_segment")
        elif segment not in allowed:
            out.append("outside_audience")
        elif r.recipient_key in seen:
            out.append("duplicate_key")
        else:
            seen.add(r.recipient_key)
            out.append("")
    return out


row_strategy = st.tuples(
    st.sampled_from(["", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"]),
    st.sampled_from([*SEGMENTS, "Team Label", "Customer"]),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=40),
    seg_subset=st.sets(st.sampled_from(SEGMENTS), min_size=1),
)
def test_every_row_is_assigned_or_excluded_with_its_reason(rows, seg_subset):
    frame = pd.DataFrame(rows, columns=["recipient_key", "segment", "doi", "supp"])
    spec = make_spec(
        segments=sorted(seg_subset),
        segment_map={"Customer": "existing_customer"},
        unmapped_segments="exclude",
        columns={"consent": "doi", "suppressed": "supp"},
    )
    expected = reference_reason(frame, spec)
    try:
        result = assign_recipients(frame, spec)
    except RecipientsError as exc:
        assert all(expected), "raised although someone was assignable"
        assert "nobody to assign" in str(exc)
        return
    summary = result.summary
    assert summary.input_rows == len(frame)
    assert summary.input_rows == summary.assigned + sum(summary.excluded.values())
    assert set(summary.excluded) == {r.value for r in ExclusionReason}
    # Exclusions and assignment partition the input rows, with the reference reasons.
    got = {int(r.row): r.reason for r in result.exclusions.itertuples()}
    assert got == {i + 1: why for i, why in enumerate(expected) if why}
    assigned_rows = [i for i, why in enumerate(expected) if not why]
    assert result.assignment["recipient_key"].tolist() == [rows[i][0] for i in assigned_rows]
    assert len(result.assignment) + len(result.exclusions) == len(frame)
    for reason, count in summary.excluded.items():
        assert count == expected.count(reason)


def test_suppression_applies_to_every_row_of_the_key():
    frame = pd.DataFrame(
        {
            "recipient_key": ["a", "a", "b"],
            "segment": "prospect",
            "suppressed": ["no", "yes", "no"],
        }
    )
    result = assign_recipients(frame, make_spec(columns={"suppressed": "suppressed"}))
    assert result.assignment["recipient_key"].tolist() == ["b"]
    assert result.exclusions["reason"].tolist() == ["suppressed", "suppressed"]


def test_filters_and_team_columns_with_email_addresses(tmp_path: Path):
    spec = make_spec(**TEAM_AUDIENCE, filters={"Country": ["DE"]})
    frame = email_list()
    result = assign_recipients(frame, spec, KEY)
    s = result.summary
    assert s.input_rows == 600
    assert s.excluded["suppressed"] == sum(1 for i in range(600) if i % 7 == 0)
    no_consent = sum(1 for i in range(600) if i % 7 and i % 5 == 0)
    assert s.excluded["no_consent"] == no_consent
    outside = sum(1 for i in range(600) if i % 7 and i % 5 and i % 3 == 0)
    assert s.excluded["outside_audience"] == outside
    assert s.assigned == 600 - s.excluded["suppressed"] - no_consent - outside
    assert s.key_source == "test" and s.key_fingerprint == KEY.fingerprint()
    # Keys are the keyed hash of the normalised address.
    first = result.assignment.iloc[0]
    assert (
        first["recipient_key"]
        == hmac.new(b"golden-test-key", b"person.1@example.com", "sha256").hexdigest()[:32]
    )
    assert list(result.assignment.columns) == list(ASSIGNMENT_COLUMNS)
    assert (result.assignment["salt"] == spec.salt).all()
    assert (result.assignment["spec_sha256"] == spec.sha256()).all()


def test_outputs_no_address_outside_the_send_lists(tmp_path: Path):
    spec = make_spec(**TEAM_AUDIENCE)
    frame = email_list()
    result = assign_recipients(frame, spec, KEY)
    paths = result.write(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "assignment.parquet",
        "exclusions.parquet",
        "assignment_summary.json",
        "send_lists",
    }
    for name in ("assignment.parquet", "exclusions.parquet", "assignment_summary.json"):
        text = (tmp_path / name).read_bytes().decode("latin-1")
        assert not EMAIL_PATTERN.search(text), name
    for frame_path in (paths["assignment"], paths["exclusions"]):
        table = pd.read_parquet(frame_path)
        for column in table.columns:
            assert not table[column].astype(str).str.contains("@").any(), (frame_path, column)
    # The send lists do carry the addresses, and nothing but the assigned people.
    lists = {p.stem: pd.read_csv(p, dtype=str, keep_default_na=False)
             for p in (tmp_path / "send_lists").iterdir()}  # fmt: skip
    assert set(lists) == {"control", "b", HOLDOUT}
    everyone = pd.concat(lists.values(), ignore_index=True)
    assert sorted(everyone["recipient_key"]) == sorted(result.assignment["recipient_key"])
    assert everyone["email"].str.match(EMAIL_PATTERN.pattern).all()
    by_key = dict(zip(frame["Email Address"].map(lambda a: hash_address(a, KEY)),
                      frame["Email Address"], strict=True))  # fmt: skip
    assert all(by_key[k] == e for k, e in zip(everyone["recipient_key"], everyone["email"],
                                              strict=True))  # fmt: skip
    b = lists["b"]
    assert list(b.columns) == [
        "email", "recipient_key", "variant_id", "segment", "campaign",
        "subject", "preheader", "from_name", "content", "send_time",
    ]  # fmt: skip
    assert set(b["subject"]) == {"Hi {first_name}"} and set(b["from_name"]) == {"Ana at Shop"}
    assert set(lists["control"]["preheader"]) == {"Spring is here"}
    assert set(lists[HOLDOUT]["subject"]) == {""}
    summary = json.loads(paths["summary"].read_text())
    assert summary == result.summary.to_dict()
    assert summary["groups"] == {g: len(lists[g]) for g in ("control", "b", HOLDOUT)}
    excl = pd.read_parquet(paths["exclusions"])
    assert excl["reason"].value_counts().to_dict() == {
        k: v for k, v in summary["excluded"].items() if v
    }


def test_assignment_parquet_is_read_by_the_metrics_engine(tmp_path: Path):
    spec = make_spec(**TEAM_AUDIENCE)
    paths = assign_recipients(email_list(), spec, KEY).write(tmp_path)
    assignment = pd.read_parquet(paths["assignment"])
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "provider": "test",
            "event_type": ["send", "delivered"],
            "ts": pd.Timestamp("2026-03-02T09:00:00Z"),
            "recipient_key": assignment["recipient_key"].iloc[[0, 0]].tolist(),
            "variant_id": assignment["variant_id"].iloc[[0, 0]].tolist(),
        }
    )
    table = compute_metrics(events, paths["assignment"], ["click_rate"])
    assert sum(table.assigned.values()) == len(assignment)


def test_without_a_key_an_address_list_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("LOOPEXP_HASH_KEY", raising=False)
    monkeypatch.delenv("LOOPEXP_HASH_KEY_FILE", raising=False)
    with pytest.raises(HashKeyError, match="LOOPEXP_HASH_KEY"):
        assign_recipients(email_list(), make_spec(**TEAM_AUDIENCE))


def test_cli_without_a_key_fails_and_with_demo_key_says_so(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("LOOPEXP_HASH_KEY", raising=False)
    monkeypatch.delenv("LOOPEXP_HASH_KEY_FILE", raising=False)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(make_spec(**TEAM_AUDIENCE).to_yaml())
    recipients = tmp_path / "list.csv"
    email_list().to_csv(recipients, index=False)
    args = ["assign", str(spec_path), "--recipients", str(recipients), "--out", str(tmp_path / "o")]
    no_key = runner.invoke(app, args)
    assert no_key.exit_code == 2, no_key.output
    assert "LOOPEXP_HASH_KEY" in no_key.output
    demo = runner.invoke(app, [*args, "--demo-key"])
    assert demo.exit_code == 0, demo.output
    assert "demo key" in demo.output
    assert "no_consent" in demo.output and "600" in demo.output
    as_json = runner.invoke(app, [*args, "--demo-key", "--json"])
    assert as_json.exit_code == 0, as_json.output
    # stdout holds the JSON; warnings (the list has no first_name for the subject) go to stderr
    printed = json.loads(as_json.stdout[as_json.stdout.index("{") :])
    assert printed == json.loads((tmp_path / "o" / "assignment_summary.json").read_text())
    assert printed["key_source"] == "demo"


def test_cli_key_from_file(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("LOOPEXP_HASH_KEY", raising=False)
    key_file = tmp_path / "key.txt"
    key_file.write_text("golden-test-key\n")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(make_spec(**TEAM_AUDIENCE).to_yaml())
    recipients = tmp_path / "list.parquet"
    email_list().to_parquet(recipients)
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        ["assign", str(spec_path), "--recipients", str(recipients), "--out", str(out),
         "--key-file", str(key_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    keys = set(pd.read_parquet(out / "assignment.parquet")["recipient_key"])
    assert hash_address("person.1@example.com", KEY) in keys


# --- determinism: adding recipients never moves anyone -------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    n_old=st.integers(1, 200),
    n_new=st.integers(0, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_adding_recipients_never_moves_existing_ones(n_old, n_new, seed):
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in rng.permutation(n_old + n_new)]
    segs = rng.choice(SEGMENTS, n_old + n_new)
    frame = pd.DataFrame({"recipient_key": ids, "segment": segs})
    spec = make_spec()
    before = assign_recipients(frame.iloc[:n_old], spec).assignment.set_index("recipient_key")
    shuffled = frame.sample(frac=1.0, random_state=seed % 2**31)
    after = assign_recipients(shuffled, spec).assignment.set_index("recipient_key")
    pd.testing.assert_frame_equal(after.loc[before.index], before)


# --- balance within each segment ------------------------------------------------------------------


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    salt=st.text(min_size=1, max_size=20),
    holdout=st.sampled_from([0.0, 0.1, 0.3]),
    weights=st.lists(st.sampled_from([1.0, 2.0, 0.5]), min_size=2, max_size=4),
)
def test_split_passes_srm_within_each_segment(salt, holdout, weights):
    ids = ["control", *(f"v{i}" for i in range(1, len(weights)))]
    spec = ExperimentSpec.model_validate(
        {
            "name": "srm",
            "campaign": "srm",
            "test_type": "content",
            "salt": salt,
            "control": "control",
            "variants": [{"id": i, "weight": w} for i, w in zip(ids, weights, strict=True)],
            "audience": {"holdout": holdout},
        }
    )
    n = 12_000
    frame = pd.DataFrame(
        {"recipient_key": [f"m-{i}" for i in range(n)], "segment": np.array(SEGMENTS)[
            np.arange(n) % 4]}
    )  # fmt: skip
    result = assign_recipients(frame, spec)
    assert set(result.summary.by_segment) == set(SEGMENTS)
    for segment, observed in result.summary.by_segment.items():
        check = srm_check(observed, spec.expected_shares(), spec.decision.srm_alpha)
        assert check.ok, (segment, observed, check.p_value)
        assert result.summary.srm_p_values[segment] == pytest.approx(check.p_value)


def test_srm_check_within_a_segment_can_fail():
    """The balance test above has teeth: a biased split inside one segment is flagged."""
    spec = make_spec(holdout=0.0)
    frame = pd.DataFrame({"recipient_key": [f"m-{i}" for i in range(8_000)], "segment": "inactive"})
    observed = assign_recipients(frame, spec).summary.by_segment["inactive"]
    biased = dict(observed, control=observed["control"] + 400, b=observed["b"] - 400)
    assert not srm_check(biased, spec.expected_shares(), spec.decision.srm_alpha).ok


# --- recency exclusion ----------------------------------------------------------------------


def test_recently_tested_recipients_are_excluded_by_key_or_address():
    spec = make_spec(**TEAM_AUDIENCE, exclude_tested_within_days=14)
    frame = email_list(40)
    as_of = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
    history = pd.DataFrame(
        {
            "email": ["person.1@example.com", " PERSON.2@example.com", "person.3@example.com"],
            "sent_at": ["2026-03-10T08:00:00Z", "2026-03-19", "2026-02-01T08:00:00Z"],
        }
    )
    result = assign_recipients(frame, spec, KEY, history=history, as_of=as_of)
    recent = result.exclusions[result.exclusions["reason"] == "recently_tested"]
    assert recent["row"].tolist() == [2, 3]  # person.1 and person.2; person.3 was too long ago
    assert result.summary.excluded["recently_tested"] == 2
    assert result.summary.as_of == as_of.isoformat()
    # By recipient key, same outcome.
    by_key = history.assign(recipient_key=[hash_address(a, KEY) for a in history["email"]])
    again = assign_recipients(frame, spec, KEY, history=by_key.drop(columns="email"), as_of=as_of)
    assert again.exclusions.equals(result.exclusions)


def test_recency_needs_a_history_and_a_history_needs_the_spec_setting():
    with pytest.raises(RecipientsError, match="--history"):
        assign_recipients(email_list(), make_spec(**TEAM_AUDIENCE, exclude_tested_within_days=7),
                          KEY)  # fmt: skip
    history = pd.DataFrame({"recipient_key": ["x"], "sent_at": ["2026-03-01"]})
    with pytest.raises(RecipientsError, match="exclude_tested_within_days"):
        assign_recipients(email_list(), make_spec(**TEAM_AUDIENCE), KEY, history=history)


def test_recency_bad_timestamp_names_the_row():
    spec = make_spec(exclude_tested_within_days=7)
    history = pd.DataFrame({"recipient_key": ["a", "b"], "sent_at": ["2026-03-01", "yesterday"]})
    frame = pd.DataFrame({"recipient_key": ["a", "b"], "segment": "prospect"})
    with pytest.raises(RecipientsError, match=r"row\(s\) \[2\]"):
        assign_recipients(frame, spec, history=history)


def test_cli_recency_with_history_file(tmp_path: Path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(make_spec(exclude_tested_within_days=30).to_yaml())
    recipients = tmp_path / "list.csv"
    pd.DataFrame({"recipient_key": [f"r{i}" for i in range(50)], "segment": "prospect"}).to_csv(
        recipients, index=False
    )
    history = tmp_path / "history.csv"
    pd.DataFrame({"recipient_key": ["r1", "r2"], "sent_at": ["2026-03-01", "2025-01-01"]}).to_csv(
        history, index=False
    )
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        ["assign", str(spec_path), "--recipients", str(recipients), "--out", str(out),
         "--history", str(history), "--as-of", "2026-03-15T00:00:00+00:00", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "assignment_summary.json").read_text())
    assert summary["excluded"]["recently_tested"] == 1
    assert summary["assigned"] == 49


@settings(max_examples=60, deadline=None)
@given(
    salt=st.text(min_size=1, max_size=30),
    keys=st.lists(st.text(max_size=150), min_size=0, max_size=30),
)
def test_arrow_and_python_hashing_paths_agree_with_the_reference(salt, keys):
    expected = [
        int.from_bytes(hashlib.sha256(f"{salt}:{k}".encode()).digest()[:8], "big") >> 11
        for k in keys
    ]
    assert _top53(salt, keys).tolist() == expected
    assert _top53(salt, pa.array(keys, type=pa.string())).tolist() == expected
    assert _top53(salt, pd.Series(keys, dtype=pd.ArrowDtype(pa.string()))).tolist() == expected


def test_cli_example_factorial_spec_on_a_crm_export(tmp_path: Path, monkeypatch):
    """experiments/multivariate_demo.yaml on a list with the CRM's own columns and labels."""
    monkeypatch.setenv("LOOPEXP_HASH_KEY", "a-long-random-secret-for-the-test")
    spec_path = DEMO_SPEC.parent / "multivariate_demo.yaml"
    n = 4_000
    labels = ["Lead", "New Customer", "Existing Customer", "Lapsed"]
    crm = pd.DataFrame(
        {
            "Email Address": [f"Client.{i}@Mail.example" for i in range(n)],
            "Lifecycle Stage": [labels[i % 4] for i in range(n)],
            "Double Opt-In": ["TRUE" if i % 10 else "FALSE" for i in range(n)],
            "Suppressed": ["" if i % 50 else "x" for i in range(n)],
            "Country": ["DE", "AT", "FR", "CH"][:4] * (n // 4),
        }
    )
    crm.to_csv(tmp_path / "crm.csv", index=False)
    pd.DataFrame({"email": ["client.1@mail.example"], "sent_at": ["2026-03-01"]}).to_csv(
        tmp_path / "history.csv", index=False
    )
    out = tmp_path / "sends"
    result = runner.invoke(
        app,
        ["assign", str(spec_path), "--recipients", str(tmp_path / "crm.csv"), "--out", str(out),
         "--history", str(tmp_path / "history.csv"), "--as-of", "2026-03-10", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "assignment_summary.json").read_text())
    assert summary["input_rows"] == n == summary["assigned"] + sum(summary["excluded"].values())
    assert summary["excluded"]["recently_tested"] == 1
    assert summary["excluded"]["outside_audience"] > 0  # leads, and France
    assert set(summary["groups"]) == {
        "plain-grid", "plain-story", "personal-grid", "personal-story", HOLDOUT
    }  # fmt: skip
    story = pd.read_csv(out / "send_lists" / "personal-story.csv", dtype=str, keep_default_na=False)
    assert set(story["preheader"]) == {"Three looks, one story"}
    assert set(story["content"]) == {"templates/autumn_story.html"}
    assert story["email"].str.endswith("@Mail.example").all()
    assert not (out / "assignment.parquet").read_bytes().count(b"@Mail.example")


def test_recency_by_address_cannot_match_a_list_keyed_by_id():
    spec = make_spec(exclude_tested_within_days=7)
    frame = pd.DataFrame({"recipient_key": ["a", "b"], "segment": "prospect"})
    history = pd.DataFrame({"email": ["a@b.example"], "sent_at": ["2026-03-01"]})
    with pytest.raises(RecipientsError, match="keyed by id"):
        assign_recipients(frame, spec, KEY, history=history)


def test_duplicates_are_decided_on_the_text_not_the_hash():
    """A 53-bit hash collision between two different keys must not exclude either."""
    keys = pa.array(["a", "b", "a", "c", "b"])
    collided = np.array([7, 7, 7, 9, 7], dtype=np.uint64)  # "a" and "b" made to collide
    assert later_duplicates(keys, collided).tolist() == [False, False, True, False, True]
    distinct = np.array([1, 2, 3, 4, 5], dtype=np.uint64)
    assert not later_duplicates(keys, distinct).any()  # only repeated hashes are compared
