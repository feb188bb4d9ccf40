"""Tests of reading and normalising recipient lists (loopexp.assignment.recipients)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopexp.assignment.recipients import (
    FALSE_VALUES,
    TRUE_VALUES,
    RecipientsError,
    prepare_recipients,
    read_recipients,
)
from loopexp.core.keys import HashKey, hash_addresses
from loopexp.design.parts import Audience

KEY = HashKey(b"recipients-test-key", "test")


def test_csv_ids_stay_text_with_leading_zeros(tmp_path: Path):
    path = tmp_path / "list.csv"
    path.write_text("customer_id,segment\n000123,prospect\n42,inactive\n")
    frame = read_recipients(path)
    out = prepare_recipients(frame, Audience(columns={"id": "customer_id"}))
    assert out["recipient_key"].tolist() == ["000123", "42"]
    assert out["row"].tolist() == [1, 2]


def test_parquet_integer_and_float_ids(tmp_path: Path):
    path = tmp_path / "list.parquet"
    pd.DataFrame({"recipient_key": [1.0, 2.0, None], "segment": "prospect"}).to_parquet(path)
    out = prepare_recipients(read_recipients(path), Audience())
    assert out["recipient_key"].tolist() == ["1", "2", ""]


def test_tsv_and_unknown_format_and_missing_file(tmp_path: Path):
    tsv = tmp_path / "list.tsv"
    tsv.write_text("recipient_key\tsegment\na\tprospect\n")
    assert read_recipients(tsv)["recipient_key"].tolist() == ["a"]
    xlsx = tmp_path / "list.xlsx"
    xlsx.write_bytes(b"x")
    with pytest.raises(RecipientsError, match=r"unknown format '\.xlsx'"):
        read_recipients(xlsx)
    with pytest.raises(RecipientsError, match="file not found"):
        read_recipients(tmp_path / "nope.csv")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(RecipientsError, match="cannot be read"):
        read_recipients(broken)


def test_missing_columns_are_named_with_the_fix():
    frame = pd.DataFrame({"recipient_key": ["a"], "Lifecycle": ["prospect"]})
    with pytest.raises(RecipientsError) as info:
        prepare_recipients(frame, Audience(columns={"consent": "doi"}))
    message = str(info.value)
    assert "['doi', 'segment']" in message
    assert "audience.columns" in message
    assert "Lifecycle" in message  # lists the columns the file has


def test_no_key_column_says_which_columns_are_looked_for():
    with pytest.raises(RecipientsError, match="recipient_key` or `email"):
        prepare_recipients(pd.DataFrame({"segment": ["prospect"]}), Audience())


def test_unknown_consent_value_is_an_error_not_a_guess():
    frame = pd.DataFrame({"recipient_key": ["a", "b"], "segment": "prospect", "doi": ["yes", "?"]})
    with pytest.raises(RecipientsError, match=r"'doi' has value\(s\) \['\?'\]"):
        prepare_recipients(frame, Audience(columns={"consent": "doi"}))


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(
        st.sampled_from(sorted(TRUE_VALUES | FALSE_VALUES)).flatmap(
            lambda v: st.sampled_from([v, v.upper(), f" {v} "])
        ),
        min_size=1,
        max_size=20,
    )
)
def test_flags_parse_every_documented_spelling(values):
    frame = pd.DataFrame({"recipient_key": "k", "segment": "prospect", "doi": values})
    out = prepare_recipients(frame, Audience(columns={"consent": "doi"}))
    assert out["consent"].tolist() == [v.strip().lower() in TRUE_VALUES for v in values]


def test_boolean_and_missing_flags():
    frame = pd.DataFrame(
        {
            "recipient_key": ["a", "b", "c"],
            "segment": "prospect",
            "sup": pd.array([True, None, False], dtype="boolean"),
        }
    )
    out = prepare_recipients(frame, Audience(columns={"suppressed": "sup"}))
    assert out["suppressed"].tolist() == [True, False, False]


def test_email_keys_are_the_keyed_hash_and_non_addresses_have_no_key():
    frame = pd.DataFrame(
        {"email": [" A@B.example ", "", "not-an-address", None], "segment": "prospect"}
    )
    out = prepare_recipients(frame, Audience(), KEY)
    assert out["recipient_key"].tolist() == [*hash_addresses(["a@b.example"], KEY), "", "", ""]
    assert out["email"].tolist()[0] == " A@B.example "


def test_filters_keep_listed_values_only():
    frame = pd.DataFrame(
        {"recipient_key": list("abcd"), "segment": "prospect", "lang": ["de", "en", " de", np.nan]}
    )
    out = prepare_recipients(frame, Audience(filters={"lang": ["de"]}))
    assert out["in_filters"].tolist() == [True, False, True, False]


def test_an_id_column_of_addresses_is_refused():
    frame = pd.DataFrame({"recipient_key": ["x1", "ann@shop.example"], "segment": "prospect"})
    with pytest.raises(RecipientsError, match=r"audience.columns.email: recipient_key"):
        prepare_recipients(frame, Audience())


def test_id_and_email_columns_together_key_by_id_and_keep_the_address():
    frame = pd.DataFrame(
        {"crm_id": ["c1", "c2"], "mail": ["a@b.example", "c@d.example"], "segment": "prospect"}
    )
    out = prepare_recipients(frame, Audience(columns={"id": "crm_id", "email": "mail"}))
    assert out["recipient_key"].tolist() == ["c1", "c2"]
    assert out["email"].tolist() == ["a@b.example", "c@d.example"]


text_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12
)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(text_values, text_values), min_size=1, max_size=15),
    parquet=st.booleans(),
)
def test_lists_round_trip_every_value_as_text(tmp_path_factory, rows, parquet):
    """Whatever the team's values (quotes, commas, unicode, leading zeros), they come back as is."""
    folder = tmp_path_factory.mktemp("lists")
    frame = pd.DataFrame(rows, columns=["customer id", "note, with comma"])
    path = folder / ("list.parquet" if parquet else "list.csv")
    if parquet:
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    back = read_recipients(path)
    assert list(back.columns) == list(frame.columns)
    assert len(back) == len(frame)
    for column in frame.columns:
        assert back[column].tolist() == frame[column].tolist()


def test_a_broken_csv_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "list.csv"
    path.write_text('recipient_key,segment\na,prospect\n"b,prospect\n')
    with pytest.raises(RecipientsError, match=r"list.csv: cannot be read"):
        read_recipients(path)
