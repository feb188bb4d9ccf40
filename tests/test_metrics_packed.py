"""The per-recipient indicators packed into bit_or words (metrics/compile.py ``_packed``).

Every 0/1 measure is one bit of a BIGINT state, 62 to a word: a metric reading the wrong bit, or
a measure past the first word, would give another metric's numbers. Here 70 indicator metrics
(two words), each true for its own set of recipients, with a cap on one and an attribution window
on another, are checked against sums counted in Python.
"""

from __future__ import annotations

from loopexp.events.validation import DUCKDB
from loopexp.metrics import compute_metrics
from loopexp.metrics.compile import events_stats_sql, make_plan
from loopexp.metrics.definitions import AttributionWindow, Measure, MetricDef
from tests.test_engine import assignment, ev, frame

LINKS = 70
RECIPIENTS = [f"r{i:03d}" for i in range(60)]


def clicks(r: int, link: int) -> bool:
    """Whether recipient ``r`` clicked link ``link`` (a pattern distinct per link)."""
    return (r * (link + 3) + link) % 7 == 0


def link_metric(link: int, **measure) -> MetricDef:
    return MetricDef(
        name=f"clicked_link_{link}",
        kind="proportion",
        numerator=Measure(events=["click"], where={"url": f"https://x/{link}"}, **measure),
        denominator="sent",
    )


def test_seventy_indicators_over_two_words_each_read_their_own_bit():
    rows, n = [], 0
    for r, key in enumerate(RECIPIENTS):
        rows.append(ev(f"s{r}", "send", key, 0))
        for link in range(LINKS):
            if clicks(r, link):
                n += 1
                # link 5's clicks come after its 60-minute window for odd recipients
                minute = 90 if link == 5 and r % 2 else 10
                rows.append(ev(f"c{n}", "click", key, minute, url=f"https://x/{link}"))
    arms = assignment([(k, "all", "a" if i % 2 == 0 else "b") for i, k in enumerate(RECIPIENTS)])
    defs = [link_metric(i) for i in range(LINKS)]
    defs[3] = link_metric(3, cap=0.5)
    defs[5] = link_metric(5, window=AttributionWindow(hours=1, after="send"))
    sql = events_stats_sql(make_plan(defs), DUCKDB)[0].sql
    assert "AS f1" in sql and "AS f2" not in sql  # two words

    table = compute_metrics(frame(rows), arms, defs)
    for link in range(LINKS):
        for arm, parity in (("a", 0), ("b", 1)):
            hit = [r for r in range(len(RECIPIENTS)) if r % 2 == parity and clicks(r, link)]
            if link == 5:
                hit = [r for r in hit if r % 2 == 0]  # odd ones clicked outside the window
            value = 0.5 if link == 3 else 1.0
            s = table.get(f"clicked_link_{link}", arm)
            assert s.n == len(RECIPIENTS) // 2
            assert (s.sum, s.sum_sq) == (len(hit) * value, len(hit) * value * value), link
