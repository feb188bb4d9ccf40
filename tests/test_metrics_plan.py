"""The engine's plan: duplicate detection by key hash, verified on candidates only.

A hash can collide; the plan must then still keep every distinct (provider, event_id) and drop
only true repeats. Forcing massive collisions (a hash of the provider alone makes every event a
candidate) must not change a single number.
"""

from __future__ import annotations

import pandas as pd
import pytest

from loopexp.core.errors import EventsError
from loopexp.events.validation import DUPLICATE
from loopexp.metrics import checks, compute_metrics, validated
from loopexp.metrics.definitions import LIBRARY
from tests.test_engine import ASSIGNMENT, campaign_events, ev, frame


def stats(table):
    return (
        table.assigned,
        table.quarantine_reasons,
        table.unassigned_events,
        [(s.metric, s.variant_id, s.segment, s.n, s.sum, s.sum_sq) for s in table.stats],
    )


def events_with_duplicates() -> pd.DataFrame:
    rows = campaign_events()
    rows += [
        ev("e06", "order", "a1", 45, revenue=10.0, currency="USD"),  # later copy: dropped
        ev("e18", "order", "b1", 65, revenue=99.0, currency="USD"),  # later copy: dropped
        ev("e04", "click", "a1", 31, is_bot_click=False, url="https://x/1", provider="other"),
    ]
    return frame(rows)


def test_colliding_hashes_change_nothing(monkeypatch):
    events = events_with_duplicates()
    exact = compute_metrics(events, ASSIGNMENT, list(LIBRARY))
    assert exact.quarantine_reasons == {DUPLICATE: 2}  # the other provider's e04 is new
    assert exact.get("revenue_per_recipient", "b").sum == 20.0
    monkeypatch.setattr(validated, "KEY_HASH", "hash(coalesce(provider, ''))")
    colliding = compute_metrics(events, ASSIGNMENT, list(LIBRARY))
    assert stats(colliding) == stats(exact)


def test_quarantine_file_still_holds_the_dropped_copies(tmp_path):
    path = tmp_path / "q.parquet"
    compute_metrics(events_with_duplicates(), ASSIGNMENT, ["click_rate"], quarantine_path=path)
    q = pd.read_parquet(path)
    assert sorted(q["event_id"]) == ["e06", "e18"]
    assert set(q["quarantine_reason"]) == {DUPLICATE}
    assert sorted(q["revenue"]) == [10.0, 99.0]


def test_exact_copies_keep_one_event():
    # Exact copies (same key, time, recipient: a webhook delivered twice) tie in the ranking:
    # exactly one of them must be kept, under exact and under colliding hashes alike.
    rows = campaign_events()
    rows += [
        ev("e06", "order", "a1", 40, revenue=10.0, currency="USD"),
        ev("e06", "order", "a1", 40, revenue=10.0, currency="USD"),
        ev("e18", "order", "b1", 60, revenue=20.0, currency="USD"),
    ]
    table = compute_metrics(frame(rows), ASSIGNMENT, ["revenue_per_recipient"])
    assert table.quarantine_reasons == {DUPLICATE: 3}
    assert table.get("revenue_per_recipient", "a").sum == 15.5  # a1: 10 + 5.5, not 25.5
    assert table.get("revenue_per_recipient", "b").sum == 20.0


def test_exact_copies_keep_one_event_with_colliding_hashes(monkeypatch):
    monkeypatch.setattr(validated, "KEY_HASH", "hash(coalesce(provider, ''))")
    test_exact_copies_keep_one_event()


def test_no_duplicate_candidates_means_no_dedupe_in_the_plan(monkeypatch):
    seen = []
    original = validated.dedupe_sql

    def spy(con):
        statements, has_candidates = original(con)
        seen.append((statements, has_candidates))
        return statements, has_candidates

    monkeypatch.setattr(validated, "dedupe_sql", spy)
    clean = compute_metrics(frame(campaign_events()), ASSIGNMENT, list(LIBRARY))
    ((statements, has_candidates),) = seen
    assert not has_candidates
    assert not any("dup_hashes" in s or "row_number" in s for s in statements)
    assert clean.quarantine_reasons == {}
    compute_metrics(events_with_duplicates(), ASSIGNMENT, list(LIBRARY))
    assert seen[1][1]


def test_colliding_assignment_hashes_are_verified_exactly(monkeypatch):
    # Every key hashing alike suggests repeated keys; the exact check must clear them.
    events = frame(campaign_events())
    exact = compute_metrics(events, ASSIGNMENT, list(LIBRARY))
    monkeypatch.setattr(checks, "ASSIGNMENT_KEY_HASH", "hash(1)")
    assert stats(compute_metrics(events, ASSIGNMENT, list(LIBRARY))) == stats(exact)
    doubled = pd.concat([ASSIGNMENT, ASSIGNMENT.iloc[:1]], ignore_index=True)
    with pytest.raises(EventsError, match="1 recipient_key"):
        compute_metrics(events, doubled, ["click_rate"])


@pytest.mark.parametrize("blank", [None, "", " ", "   ", "\u00a0", "\u3000 "])
def test_blank_assignment_fields_are_refused(blank):
    # The blank check runs trim() only on values starting with a space or non-ASCII character;
    # it must refuse exactly what NULL-or-trim(x)='' refuses.
    events = frame(campaign_events())
    for column in ("recipient_key", "segment", "variant_id"):
        bad = ASSIGNMENT.copy()
        bad.loc[2, column] = blank
        with pytest.raises(EventsError, match=rf"1 row\(s\) without a {column}"):
            compute_metrics(events, bad, ["click_rate"])


def test_keys_with_inner_or_leading_characters_are_not_blank():
    events = frame(campaign_events())
    odd = ASSIGNMENT.copy()
    odd.loc[6, "recipient_key"] = " h1"  # not blank: an unmatched key, not an error
    table = compute_metrics(events, odd, ["click_rate"])
    assert table.assigned["holdout"] == 1
