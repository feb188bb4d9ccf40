"""Fast keyed hashing (distinct addresses once, on every core) equals HMAC written in full."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopexp.core import keys as keys_module
from loopexp.core import parallel
from loopexp.core.keys import HashKey, hash_address_array, hash_addresses

KEY = HashKey(b"a-test-secret", "test")


def reference(addresses: list[str]) -> list[str]:
    """The definition, per address: HMAC-SHA-256 of the stripped, lower-cased address, 32 hex."""
    return [
        hmac.new(KEY.secret, a.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]
        for a in addresses
    ]


def awkward_addresses(n: int) -> list[str]:
    shapes = [
        lambda i: f"person.{i}@example.com",
        lambda i: f"  Person.{i}@Example.COM ",
        lambda i: f"zoë.{i}@bücher.de",
        lambda i: f"İSTANBUL{i}@örnek.tr",  # lower() lengthens it: must not be done bytewise
        lambda i: f"\x1c\tuser{i}@x.io\x1f",  # separators str.strip() removes
        lambda i: "",
        lambda i: "not an address",
        lambda i: "repeat@example.com",  # the same address on many rows
        lambda i: f"顧客{i}@例え.jp",
    ]
    return [shapes[i % len(shapes)](i) for i in range(n)]


@pytest.fixture
def forced_split(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ROWS_PER_WORKER", 1)
    monkeypatch.setattr(keys_module, "_CHUNK", 7)


@pytest.mark.parametrize("distinct", [False, True])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_array_hashing_equals_reference(forced_split, workers, distinct):
    addresses = awkward_addresses(2003)
    got = hash_address_array(pa.array(addresses), KEY, workers=workers, distinct=distinct)
    assert got.type == pa.string()
    assert got.to_pylist() == reference(addresses)


@pytest.mark.parametrize("distinct", [False, True])
def test_nulls_stay_null_and_chunked_input_is_accepted(forced_split, distinct):
    addresses = ["a@b.example", None, "A@B.example", None]
    chunked = pa.chunked_array([addresses[:2], addresses[2:]])
    got = hash_address_array(chunked, KEY, workers=2, distinct=distinct)
    assert got.to_pylist() == [
        reference(["a@b.example"])[0],
        None,
        reference(["a@b.example"])[0],
        None,
    ]


def test_long_lists_take_the_array_path_and_give_the_same_keys(monkeypatch, forced_split):
    monkeypatch.setattr(keys_module, "_ARRAY_PATH_FROM", 10)
    calls = []
    real = keys_module.hash_address_array
    monkeypatch.setattr(
        keys_module, "hash_address_array", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    addresses = awkward_addresses(500)
    assert hash_addresses(addresses, KEY) == reference(addresses)
    assert calls  # the fast path was the one compared
    assert hash_addresses(addresses[:5], KEY) == reference(addresses[:5])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    addresses=st.lists(st.text(max_size=30), max_size=50),
    workers=st.integers(1, 3),
    distinct=st.booleans(),
)
def test_property_array_hashing_equals_reference(forced_split, addresses, workers, distinct):
    got = hash_address_array(pa.array(addresses, pa.string()), KEY, workers, distinct)
    assert got.to_pylist() == reference(addresses)


def test_hex_table_spells_each_byte():
    assert keys_module._HEX_PAIRS.size == 256
    spelled = keys_module._HEX_PAIRS[np.arange(256, dtype=np.uint8)].tobytes().decode()
    assert spelled == bytes(range(256)).hex()
