"""The engine's plan: duplicate detection by key hash, verified on candidates only.

A hash can collide; the plan must then still keep every distinct (provider, event_id) and drop
only true repeats. Forcing massive collisions (a hash of the provider alone makes every event a
candidate) must not change a single number.
"""

from __future__ import annotations

import pandas as pd

from loopexp.metrics import compute_metrics, engine
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
    assert exact.quarantine_reasons == {engine.DUPLICATE: 2}  # the other provider's e04 is new
    assert exact.get("revenue_per_recipient", "b").sum == 20.0
    monkeypatch.setattr(engine, "_KEY_HASH", "hash(coalesce(provider, ''))")
    colliding = compute_metrics(events, ASSIGNMENT, list(LIBRARY))
    assert stats(colliding) == stats(exact)


def test_quarantine_file_still_holds_the_dropped_copies(tmp_path):
    path = tmp_path / "q.parquet"
    compute_metrics(events_with_duplicates(), ASSIGNMENT, ["click_rate"], quarantine_path=path)
    q = pd.read_parquet(path)
    assert sorted(q["event_id"]) == ["e06", "e18"]
    assert set(q["quarantine_reason"]) == {engine.DUPLICATE}
    assert sorted(q["revenue"]) == [10.0, 99.0]
