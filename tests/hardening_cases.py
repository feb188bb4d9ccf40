"""Broken inputs of issue #19 as a table: each case builds files and says what must happen.

Used by ``tests/test_hardening.py`` (one test per case) and by ``bench/hardening_table.py``, which
runs every case on two versions of loopexp and prints the before/after table of
``tests/HARDENING.md``. A case only uses the public API both versions share (``analyze_files``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEMO_SPEC = ROOT / "experiments" / "subject_line_demo.yaml"
ADDRESS = "jane.doe@example.com"


@dataclass(frozen=True)
class Case:
    """One broken input: how to build it and the outcome the fixed code must give.

    ``expect`` is ``same`` (parsed: the very statistics and decision of the clean data),
    ``quarantine`` (runs; ``reasons`` are the quarantine counts) or ``error`` (raises a clear
    ``EventsError`` whose message matches ``message``).
    """

    id: str
    what: str
    build: Callable[[Path], tuple[Path, Path]]
    expect: str
    reasons: dict[str, int] = field(default_factory=dict)
    message: str = ""
    check: Callable[[Path], None] | None = None


@functools.cache
def campaign() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small simulated send of the demo spec (canonical events, assignment)."""
    from loopexp.design.spec import load_spec
    from loopexp.sim.simulate import simulate_campaign

    sim = simulate_campaign(load_spec(DEMO_SPEC), 3_000, seed=5)
    return sim.events.copy(), sim.assignment.copy()


def spec():
    from loopexp.design.spec import load_spec

    return load_spec(DEMO_SPEC)


def events() -> pd.DataFrame:
    return campaign()[0].copy()


def assignment() -> pd.DataFrame:
    return campaign()[1].copy()


def _canonical(df: pd.DataFrame, path: Path) -> Path:
    from loopexp.sim.simulate import write_events

    return write_events(df, path)


def write(tmp: Path, ev: pd.DataFrame | None = None, asg: pd.DataFrame | None = None):
    """Write events (as given: columns keep their types) and the assignment as Parquet."""
    ev_path = tmp / "events.parquet"
    if ev is None:
        _canonical(events(), ev_path)
    else:
        ev.to_parquet(ev_path, index=False)
    asg_path = tmp / "assignment.parquet"
    (assignment() if asg is None else asg).to_parquet(asg_path, index=False)
    return ev_path, asg_path


def _flags_as_text(df: pd.DataFrame) -> pd.DataFrame:
    for flag in ("is_machine_open", "is_bot_click"):
        df[flag] = df[flag].map({True: "true", False: "false"}).astype(object)
    return df


def _ts(convert: Callable[[pd.Series], pd.Series]) -> Callable[[Path], tuple[Path, Path]]:
    def build(tmp: Path):
        df = events()
        df["ts"] = convert(df["ts"])
        return write(tmp, df)

    return build


def _epoch(ts: pd.Series, unit: int) -> pd.Series:
    return ts.astype("datetime64[ns, UTC]").astype("int64") // unit


def _rows(kind: str, n: int | None = None) -> Callable[[pd.DataFrame], pd.Index]:
    def pick(df: pd.DataFrame) -> pd.Index:
        idx = df.index[df.event_type == kind]
        return idx if n is None else idx[:n]

    return pick


def _mutate(column: str, value, pick, as_text: bool = False):
    def build(tmp: Path):
        df = events()
        if as_text:
            df = _flags_as_text(df) if column.startswith("is_") else df
            if column == "revenue":
                df["revenue"] = df["revenue"].map(lambda x: None if pd.isna(x) else f"{x:.2f}")
        if column == "ts":  # the rest of the column in the form of the bad value: text or epoch
            df["ts"] = (
                df["ts"].map(lambda t: t.isoformat()) if isinstance(value, str) else _epoch(
                    df["ts"], 10**9)
            )  # fmt: skip
        df[column] = df[column].astype(object)
        df.loc[pick(df), column] = value
        return write(tmp, df)

    return build


def _quarantine_has(column: str, value: str) -> Callable[[Path], None]:
    def check(tmp: Path):
        q = pd.read_parquet(tmp / "quarantine.parquet")
        assert value in set(q[column].dropna()), (column, set(q[column].dropna()))

    return check


def _no_address_in_quarantine(tmp: Path) -> None:
    from loopexp.core.keys import EMAIL_PATTERN

    q = pd.read_parquet(tmp / "quarantine.parquet")
    text = q.astype(str).to_csv()
    assert not EMAIL_PATTERN.search(text), EMAIL_PATTERN.findall(text)[:3]
    assert (tmp / "quarantine.parquet").read_bytes().find(b"@example.com") < 0


# --- glob builders -----------------------------------------------------------------------------


def _glob_bot_column_only_in_later_file(tmp: Path):
    # Sends, deliveries and bounces carry no flags: a file of those has no flag columns, as some
    # providers' delivery exports do; the opens and clicks, with their flags, come in a later file.
    df = events()
    flagless = df.event_type.isin(["send", "delivered", "bounce_hard", "bounce_soft"])
    folder = tmp / "parts"
    folder.mkdir()
    df[flagless].drop(columns=["is_bot_click", "bot_reason", "is_machine_open"]).to_parquet(
        folder / "part-0.parquet", index=False
    )
    _canonical(df[~flagless], folder / "part-1.parquet")
    _, asg = write(tmp)
    return folder / "part-*.parquet", asg


def _glob_file_missing_key(tmp: Path):
    df = events()
    folder = tmp / "parts"
    folder.mkdir()
    _canonical(df.iloc[:100], folder / "part-0.parquet")
    df.iloc[100:].drop(columns=["recipient_key"]).to_parquet(folder / "part-1.parquet")
    _, asg = write(tmp)
    return folder / "part-*.parquet", asg


def _glob_mixed_ts_types(tmp: Path):
    df = events()
    folder = tmp / "parts"
    folder.mkdir()
    _canonical(df.iloc[: len(df) // 2], folder / "part-0.parquet")
    second = df.iloc[len(df) // 2 :].copy()
    second["ts"] = _epoch(second["ts"], 10**6)  # epoch milliseconds
    second.to_parquet(folder / "part-1.parquet", index=False)
    _, asg = write(tmp)
    return folder / "part-*.parquet", asg


# --- unreadable files --------------------------------------------------------------------------


def _file(content: bytes | Callable[[Path], bytes], name: str = "events.parquet"):
    def build(tmp: Path):
        _, asg = write(tmp)
        path = tmp / name
        path.write_bytes(content(tmp) if callable(content) else content)
        return path, asg

    return build


def _truncated(tmp: Path) -> bytes:
    ev, _ = write(tmp)
    data = ev.read_bytes()
    return data[: len(data) // 2]


def _events_csv_bad_row(tmp: Path) -> bytes:
    head = "event_id,provider,event_type,ts,recipient_key\n"
    ok = "".join(f"e{i},esp,open,2026-03-02T09:00:00Z,k{i}\n" for i in range(30_000))
    return (head + ok + f"e-x,esp,open,2026-03-02T09:00:00Z,{ADDRESS},oops\n").encode()


def _empty_events(tmp: Path):
    ev, asg = write(tmp)
    _canonical(events().iloc[:0], ev)
    return ev, asg


# --- assignments -------------------------------------------------------------------------------


def _assignment(change: Callable[[pd.DataFrame], pd.DataFrame]):
    def build(tmp: Path):
        return write(tmp, None, change(assignment()))

    return build


def _dup_same(a: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([a, a.iloc[:40]], ignore_index=True)


def _dup_cross(a: pd.DataFrame) -> pd.DataFrame:
    extra = a.iloc[:40].copy()
    extra["variant_id"] = np.where(extra["variant_id"] == "control", "urgency", "control")
    return pd.concat([a, extra], ignore_index=True)


def _set(column: str, value, n: int = 25):
    def change(a: pd.DataFrame) -> pd.DataFrame:
        a[column] = a[column].astype(object)
        a.loc[a.index[:n], column] = value
        return a

    return change


def _other_keys(a: pd.DataFrame) -> pd.DataFrame:
    a["recipient_key"] = "other-" + a["recipient_key"]
    return a


def _assignment_csv_empty(tmp: Path):
    ev, _ = write(tmp)
    path = tmp / "assignment.csv"
    path.write_bytes(b"")
    return ev, path


def _url_address(tmp: Path):
    df = events()
    i = df.index[df.event_type == "click"][0]
    df["url"] = df["url"].astype(object)
    df["ts"] = df["ts"].astype(object)
    df.loc[i, "url"] = f"https://x.example/?email={ADDRESS}"
    df.loc[i, "ts"] = "garbled"
    df["ts"] = df["ts"].astype(str)
    return write(tmp, df)


def _nan_revenue(tmp: Path):
    # pandas/pyarrow turn NaN into null on write; DuckDB (like Spark) keeps a NaN a NaN.
    ev, asg = write(tmp)
    nan = tmp / "events-nan.parquet"
    duckdb.execute(
        f"COPY (SELECT * REPLACE (CASE WHEN event_type = 'order' THEN 'NaN'::DOUBLE "
        f"ELSE revenue END AS revenue) FROM read_parquet('{ev}')) TO '{nan}' (FORMAT parquet)"
    )
    return nan, asg


CLEAN = "missing or unparseable ts"

CASES: list[Case] = [
    # --- timestamps providers send ------------------------------------------------------------
    Case(
        "ts-epoch-s",
        "ts as int Unix seconds (SendGrid, Braze, Klaviyo)",
        _ts(lambda t: _epoch(t, 10**9)),
        "same",
    ),
    Case("ts-epoch-ms", "ts as int Unix milliseconds", _ts(lambda t: _epoch(t, 10**6)), "same"),
    Case(
        "ts-epoch-ms-text",
        "ts as Unix milliseconds in a text column",
        _ts(lambda t: _epoch(t, 10**6).astype(str)),
        "same",
    ),
    Case(
        "ts-epoch-s-float",
        "ts as float Unix seconds (Mailgun)",
        _ts(lambda t: _epoch(t, 10**3) / 1e6),
        "same",
    ),
    Case("ts-epoch-us", "ts as int Unix microseconds", _ts(lambda t: _epoch(t, 10**3)), "same"),
    Case(
        "ts-iso-offset",
        "ts as ISO 8601 text with a +01:00 offset",
        _ts(lambda t: t.dt.tz_convert("Europe/Paris").map(lambda x: x.isoformat())),
        "same",
    ),
    Case(
        "ts-rfc2822",
        "ts as RFC 2822 text (Mon, 02 Mar 2026 09:00:00 +0000)",
        _ts(lambda t: t.dt.strftime("%a, %d %b %Y %H:%M:%S +0000")),
        "same",
    ),
    Case(
        "ts-space-offset",
        "ts as text with a space before the offset (… 09:00:00 +00:00)",
        _ts(lambda t: t.dt.strftime("%Y-%m-%d %H:%M:%S +00:00")),
        "same",
    ),
    Case(
        "ts-7-digit-fraction",
        "ts with 7 fractional digits and an offset (Postmark)",
        _ts(lambda t: t.dt.strftime("%Y-%m-%dT%H:%M:%S.1234567+00:00")),
        "same",
    ),
    Case(
        "ts-garbage-some",
        "ts 'yesterday-ish' on 30 events",
        _mutate("ts", "yesterday-ish", lambda df: df.index[:30], as_text=False),
        "quarantine",
        {CLEAN: 30},
    ),
    Case(
        "ts-epoch-zero",
        "ts = 0 (epoch 1970) on 20 events",
        _mutate("ts", 0, lambda df: df.index[:20]),
        "quarantine",
        {"ts out of range (before 2000 or after 2099)": 20},
    ),
    Case(
        "ts-garbage-most",
        "ts unparseable on 60% of events: most events quarantined",
        _mutate("ts", "n/a", lambda df: df.index[: int(len(df) * 0.6)]),
        "error",
        message=r"quarantined, more than the spec's data.max_quarantine_share",
    ),
    # --- revenue ------------------------------------------------------------------------------
    Case(
        "revenue-null",
        "revenue missing (null) on every order (a control: caught before too)",
        _mutate("revenue", None, _rows("order")),
        "quarantine",
        {"order without a valid revenue": 16},
    ),
    Case(
        "revenue-nan",
        "revenue NaN (a real IEEE NaN, as Spark writes it) on every order",
        _nan_revenue,
        "quarantine",
        {"unparseable or non-finite revenue": 16},
    ),
    Case(
        "revenue-inf",
        "revenue +inf on 5 orders",
        _mutate("revenue", np.inf, _rows("order", 5)),
        "quarantine",
        {"unparseable or non-finite revenue": 5},
    ),
    Case(
        "revenue-neg-inf",
        "revenue -inf on 5 orders",
        _mutate("revenue", -np.inf, _rows("order", 5)),
        "quarantine",
        {"unparseable or non-finite revenue": 5},
    ),
    Case(
        "revenue-nan-on-open",
        "revenue NaN written as text 'NaN' on 10 opens",
        _mutate("revenue", "NaN", _rows("open", 10), as_text=True),
        "quarantine",
        {"unparseable or non-finite revenue": 10},
    ),
    Case(
        "revenue-comma",
        "revenue text '12,50' (decimal comma) on 3 orders",
        _mutate("revenue", "12,50", _rows("order", 3), as_text=True),
        "quarantine",
        {"unparseable or non-finite revenue": 3},
        check=_quarantine_has("raw_revenue", "12,50"),
    ),
    # --- flags --------------------------------------------------------------------------------
    Case(
        "flag-mpp",
        "is_machine_open = 'MPP' on 50 opens",
        _mutate("is_machine_open", "MPP", _rows("open", 50), as_text=True),
        "quarantine",
        {"unparseable is_machine_open": 50},
        check=_quarantine_has("raw_is_machine_open", "MPP"),
    ),
    Case(
        "flag-bot-text",
        "is_bot_click = 'scanner?' on 20 clicks",
        _mutate("is_bot_click", "scanner?", _rows("click", 20), as_text=True),
        "quarantine",
        {"unparseable is_bot_click": 20},
        check=_quarantine_has("raw_is_bot_click", "scanner?"),
    ),
    Case(
        "flag-yes-no",
        "flags as 'yes' / 'no' text",
        _mutate(
            "is_machine_open",
            "yes",
            lambda df: df.index[df.is_machine_open.eq("true").fillna(False).astype(bool)],
            as_text=True,
        ),
        "same",
    ),
    # --- globs --------------------------------------------------------------------------------
    Case(
        "glob-columns-differ",
        "glob: is_bot_click / is_machine_open only in the later file",
        _glob_bot_column_only_in_later_file,
        "same",
    ),
    Case(
        "glob-file-missing-key",
        "glob: the second file has no recipient_key",
        _glob_file_missing_key,
        "error",
        message=r"part-1\.parquet: missing required column",
    ),
    Case(
        "glob-ts-types-differ",
        "glob: ts a timestamp in one file, epoch ms in the other",
        _glob_mixed_ts_types,
        "same",
    ),
    # --- unreadable files ---------------------------------------------------------------------
    Case(
        "file-empty",
        "events.parquet of 0 bytes",
        _file(b""),
        "error",
        message=r"events\.parquet: the file is empty \(0 bytes\)",
    ),
    Case(
        "file-truncated",
        "events.parquet cut in half",
        _file(_truncated),
        "error",
        message=r"events\.parquet: truncated Parquet file",
    ),
    Case(
        "file-json",
        "JSON given as events.parquet",
        _file(json.dumps([{"event_id": "e1"}]).encode()),
        "error",
        message=r"not a Parquet file \(it looks like JSON\)",
    ),
    Case(
        "file-csv-as-parquet",
        "CSV text named events.parquet",
        _file(b"event_id,provider\ne1,esp\n"),
        "error",
        message=r"not a Parquet file \(it looks like text",
    ),
    Case(
        "file-csv-unsniffable",
        "binary garbage named events.csv",
        _file(b"\x00\x01\x02\xff\xfe garbage \x00\n\x03", "events.csv"),
        "error",
        message=r"events\.csv: cannot be read as CSV",
    ),
    Case(
        "file-csv-bad-row-address",
        "a CSV row with an extra field, quoting an address",
        _file(_events_csv_bad_row, "events.csv"),
        "error",
        message=r"DuckDB could not process the inputs",
    ),
    Case(
        "events-empty",
        "events.parquet with no rows",
        _empty_events,
        "error",
        message=r"no usable event",
    ),
    # --- keys ---------------------------------------------------------------------------------
    Case(
        "key-address",
        "recipient_key a raw e-mail address on 5 events",
        _mutate("recipient_key", ADDRESS, lambda df: df.index[:5]),
        "quarantine",
        {"recipient_key is an e-mail address, not a hashed key": 5},
        check=_no_address_in_quarantine,
    ),
    Case(
        "url-address",
        "quarantined event whose url carries ?email=<address>",
        _url_address,
        "quarantine",
        {"missing or unparseable ts": 1},
        check=_no_address_in_quarantine,
    ),
    # --- assignments --------------------------------------------------------------------------
    Case(
        "asg-dup-same-variant",
        "40 recipient keys twice in the same variant",
        _assignment(_dup_same),
        "error",
        message=r"40 recipient_key\(s\) appear more than once",
    ),
    Case(
        "asg-dup-two-variants",
        "40 recipient keys in two variants",
        _assignment(_dup_cross),
        "error",
        message=r"40 of them in more than one group",
    ),
    Case(
        "asg-null-key",
        "25 assignment rows without a recipient_key",
        _assignment(_set("recipient_key", None)),
        "error",
        message=r"25 row\(s\) without a recipient_key",
    ),
    Case(
        "asg-empty-segment",
        "25 assignment rows with an empty segment",
        _assignment(_set("segment", "")),
        "error",
        message=r"25 row\(s\) without a segment",
    ),
    Case(
        "asg-segment-outside",
        "25 recipients in segment 'vip' the spec does not have",
        _assignment(_set("segment", "vip")),
        "error",
        message=r"'vip' \(25\)",
    ),
    Case(
        "asg-variant-outside",
        "25 recipients in variant 'old_subject' the spec lacks",
        _assignment(_set("variant_id", "old_subject")),
        "error",
        message=r"'old_subject' \(25\)",
    ),
    Case(
        "asg-address-keys",
        "assignment keyed by raw e-mail addresses",
        _assignment(_set("recipient_key", ADDRESS, n=1)),
        "error",
        message=r"are e-mail addresses, not hashed keys",
    ),
    Case(
        "asg-no-match",
        "assignment whose keys match no event (another campaign)",
        _assignment(_other_keys),
        "error",
        message=r"no event of .* belongs to a recipient",
    ),
    Case(
        "asg-csv-empty",
        "assignment.csv of 0 bytes",
        _assignment_csv_empty,
        "error",
        message=r"assignment\.csv: the file is empty",
    ),
]


def run(case: Case, tmp: Path):
    """Run ``case`` through ``analyze_files`` and a results.json round trip.

    Returns ``(table, results)``; exceptions propagate.
    """
    from loopexp.analysis.analyze import analyze_files
    from loopexp.analysis.results import ExperimentResults

    ev, asg = case.build(tmp)
    table, results = analyze_files(spec(), ev, asg, tmp / "quarantine.parquet")
    back = ExperimentResults.read_json(results.write_json(tmp / "results.json"))
    return table, back


def summary(case: Case, tmp: Path) -> str:
    """One line saying what a version of loopexp does with ``case`` (for the before/after table)."""
    try:
        table, results = run(case, tmp)
    except Exception as exc:
        message = " ".join(str(exc).split())
        kind = type(exc).__name__
        if kind not in ("EventsError", "QuarantineError", "SpecError"):
            kind = f"raw {type(exc).__module__}.{kind}"
        return f"{kind}: {message[:110]}"
    reasons = ", ".join(f"{k}: {v}" for k, v in table.quarantine_reasons.items()) or "none"
    leak = ""
    quarantine = tmp / "quarantine.parquet"
    if quarantine.exists() and ADDRESS in pd.read_parquet(quarantine).astype(str).to_csv():
        leak = "; **quarantine.parquet holds the raw address**"
    return (
        f"decides {results.decision.status.value}; {table.quarantined}/{table.events} "
        f"quarantined ({reasons}){leak}"
    )
