"""Reader classes before a send, computed in DuckDB from the event history (issue 28, MPP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from loopexp.analysis.opens import analyze_opens, share_jump
from loopexp.metrics.readers import machine_share_by_campaign, opens_table, reader_classes

SENT = datetime(2026, 5, 4, 9, tzinfo=UTC)


def _events(rows: list[tuple[str, str, float, bool | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "provider": "test",
            "event_type": [r[1] for r in rows],
            "ts": [pd.Timestamp(SENT + timedelta(days=r[2])) for r in rows],
            "recipient_key": [r[0] for r in rows],
            "campaign_id": "c",
            "is_machine_open": pd.array([r[3] for r in rows], dtype="boolean"),
        }
    )


HISTORY = _events(
    [
        ("human", "open", -30, False),  # a human open seen: non-proxy
        ("human", "open", -20, True),
        ("apple", "open", -30, True),  # only machine opens: proxy
        ("apple", "open", -10, True),
        ("apple", "click", -10, None),  # a click does not make the opens visible
        ("clicker", "click", -5, None),  # never opened: unknown
        ("nullflag", "open", -3, None),  # no flag: a human open
        ("late", "open", 0.5, False),  # this send's own open: never classifies
    ]
)


def test_reader_classes_only_from_opens_before_the_send() -> None:
    got = reader_classes(HISTORY, SENT).set_index("recipient_key")["reader_class"].to_dict()
    assert got == {"apple": "proxy", "human": "non_proxy", "nullflag": "non_proxy"}


def test_opens_table_counts_this_sends_opens_per_assigned_recipient() -> None:
    send = _events(
        [
            ("human", "send", 0, None),
            ("human", "open", 0.1, False),
            ("human", "open", 0.2, False),
            ("apple", "send", 0, None),
            ("apple", "open", 0.01, True),
            ("late", "send", 0, None),
            ("late", "open", 0.5, False),
        ]
    )
    assignment = pd.DataFrame(
        {
            "recipient_key": ["human", "apple", "late", "clicker"],
            "segment": "all",
            "variant_id": ["A", "B", "A", "B"],
        }
    )
    table = opens_table(send, assignment, pd.concat([HISTORY, send])).set_index("recipient_key")
    assert table.loc[
        "human", ["variant", "reader_class", "human_opens", "machine_opens"]
    ].tolist() == [
        "A",
        "non_proxy",
        2,
        0,
    ]
    assert table.loc["apple", ["reader_class", "human_opens", "machine_opens"]].tolist() == [
        "proxy",
        0,
        1,
    ]
    assert table.loc["late", "reader_class"] == "unknown"  # its open is after the cut
    assert table.loc["clicker", ["reader_class", "human_opens"]].tolist() == ["unknown", 0]
    out = analyze_opens(table.reset_index(), "A")
    assert out.machine_open_share == {"A": 0.0, "B": 1.0}


def test_machine_share_monitor_flags_a_jump_between_sends() -> None:
    older = _events([("x", "open", -60, False), ("y", "open", -60, False)])
    older = older.assign(campaign_id="c0", event_id=["old0", "old1"])  # distinct ids: no dedupe
    history = pd.concat([older, HISTORY])  # c0: 0 % machine; c: 3 of 5 opens before the cut
    series = machine_share_by_campaign(history, SENT)
    assert series["campaign_id"].tolist() == ["c0", "c"]
    assert series["opens"].tolist() == [2, 5] and series["machine_opens"].tolist() == [0, 3]
    send = pd.DataFrame(
        {
            "variant": ["A", "B"],
            "reader_class": "unknown",
            "human_opens": [1, 0],
            "machine_opens": [3, 4],
        }
    )  # 7 of 8 opens are machine opens: 60 % -> 88 %
    message = share_jump(series, send)
    assert message is not None and "60%" in message and "88%" in message and "campaign c" in message
    same = send.assign(human_opens=[1, 1], machine_opens=[2, 1])  # 60 % -> 60 %: no flag
    assert share_jump(series, same) is None
    assert share_jump(series.iloc[0:0], send) is None  # no earlier campaign: nothing to compare
