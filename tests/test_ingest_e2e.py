"""End to end with real-looking data: recipient CSV with addresses and the team's own segment labels
→ keyed hash → assignment → simulated SendGrid- and Mailchimp-shaped exports of a campaign with a
known effect (plus Apple proxy opens and link scanners) → ``loopexp run --events-format ...``
(which ingests them) → the right decision.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loopexp.assignment.assign import assign
from loopexp.core.keys import hash_addresses, load_hash_key
from loopexp.design.spec import load_spec

SECRET = "e2e-test-secret-0123456789abcdef"
LABELS = {  # the team's own labels → loopexp's lifecycle segments
    "Prospect": "prospect",
    "New Customer": "new_customer",
    "Existing Customer": "existing_customer",
    "Inactive": "inactive",
}
SPEC = """\
schema_version: 1
name: welcome-subject
campaign: welcome
iteration: 1
test_type: subject_line
salt: welcome-subject-iter-1
control: control
variants:
  - id: control
    subject: "Welcome to the shop"
  - id: personal
    subject: "{first_name}, your welcome gift"
primary_metric: click_rate
secondary_metrics: [open_rate, open_rate_raw, click_rate_raw]
guardrails:
  - metric: unsubscribe_rate
    max_relative_increase: 0.5
backlog:
  - id: question
    subject: "Ready for your first order?"
"""
SEND = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIRST = ["anna", "ben", "carla", "dmitri", "emma", "farid", "grace", "hugo", "ines", "jonas"]
LAST = ["smith", "mueller", "garcia", "rossi", "nowak", "dubois", "kim", "silva", "berg", "khan"]
DOMAINS = ["gmail.com", "yahoo.co.uk", "outlook.com", "web.de", "icloud.com", "example.org"]


def recipients_csv(path: Path, n: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for i in range(n):
        first, last = FIRST[i % 10], LAST[(i // 10) % 10]
        address = f"{first}.{last}{i}@{DOMAINS[i % len(DOMAINS)]}"
        if i % 7 == 0:
            address = address.title()  # ESPs and CRMs disagree on case
        rows.append(
            {"Email": address, "Lifecycle": rng.choice(list(LABELS)), "First Name": first.title()}
        )
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def simulate(addresses: list[str], variants: list[str], rng: np.random.Generator) -> list[dict]:
    """One campaign: personal lifts human opens 25% → 35%; bots act the same in every arm."""
    people = []
    for address, variant in zip(addresses, variants, strict=True):
        p = {
            "email": address,
            "variant": variant,
            "delivered": rng.random() < 0.97,
            "apple": rng.random() < 0.4,
            "scanner": rng.random() < 0.04,
        }
        p_open = 0.35 if variant == "personal" else 0.25
        p["opened"] = p["delivered"] and rng.random() < p_open
        p["clicked"] = p["opened"] and rng.random() < 0.3
        p["unsub"] = p["delivered"] and rng.random() < 0.01
        p["t_delivered"] = SEND + timedelta(seconds=float(rng.uniform(1, 300)))
        p["t_open"] = p["t_delivered"] + timedelta(minutes=float(rng.uniform(5, 600)))
        people.append(p)
    return people


def sendgrid_export(people: list[dict], folder: Path) -> None:
    lines, n = [], 0

    def emit(p, event, ts, **extra):
        nonlocal n
        n += 1
        lines.append(
            {
                "email": p["email"],
                "event": event,
                "timestamp": int(ts.timestamp()),
                "sg_event_id": f"sg{n:08d}",
                "sg_message_id": f"msg-{abs(hash(p['email']))}",
                "variant": p["variant"],
                **extra,
            }
        )

    human = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120"
    for p in people:
        emit(p, "processed", SEND)
        if not p["delivered"]:
            emit(p, "bounce", p["t_delivered"], type="bounce")
            continue
        emit(p, "delivered", p["t_delivered"])
        if p["apple"]:
            emit(
                p,
                "open",
                p["t_delivered"] + timedelta(seconds=1),
                useragent="Mozilla/5.0",
                sg_machine_open=True,
            )
        if p["scanner"]:
            for k in range(3):
                emit(
                    p,
                    "click",
                    p["t_delivered"] + timedelta(seconds=3),
                    useragent="Barracuda Sentinel",
                    url=f"https://shop.example/{k}",
                )
        if p["opened"]:
            emit(p, "open", p["t_open"], useragent=human, sg_machine_open=False)
        if p["clicked"]:
            emit(
                p,
                "click",
                p["t_open"] + timedelta(seconds=40),
                useragent=human,
                url="https://shop.example/gift",
            )
        if p["unsub"]:
            emit(p, "unsubscribe", p["t_open"] + timedelta(minutes=1))
    text = [json.dumps(x) for x in lines]
    text += text[:50]  # a webhook retry delivered the first events twice
    text.insert(100, '{"email": "broken')  # and one line was cut off
    (folder / "sendgrid_2026-03-02.ndjson").write_text("\n".join(text) + "\n")


def mailchimp_export(people: list[dict], folder: Path) -> None:
    group = {"control": "a", "personal": "b"}
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00")  # noqa: E731
    sent_to = {
        "campaign_id": "c42",
        "send_time": iso(SEND),
        "sent_to": [
            {
                "email_address": p["email"],
                "status": "sent" if p["delivered"] else "hard",
                "absplit_group": group[p["variant"]],
                "campaign_id": "c42",
            }
            for p in people
        ],
    }
    emails, unsubscribes = [], []
    for p in people:
        activity = []
        if p["apple"] and p["delivered"]:
            activity.append(
                {
                    "action": "open",
                    "timestamp": iso(SEND + timedelta(seconds=1)),
                    "ip": "17.58.101.7",
                }
            )
        if p["scanner"] and p["delivered"]:
            activity += [
                {
                    "action": "click",
                    "timestamp": iso(SEND + timedelta(seconds=2)),
                    "url": f"https://shop.example/{k}",
                    "ip": "52.1.2.3",
                }
                for k in range(3)
            ]
        if p["opened"]:
            activity.append({"action": "open", "timestamp": iso(p["t_open"]), "ip": "81.2.69.1"})
        if p["clicked"]:
            activity.append(
                {
                    "action": "click",
                    "timestamp": iso(p["t_open"] + timedelta(seconds=40)),
                    "url": "https://shop.example/gift",
                    "ip": "81.2.69.1",
                }
            )
        if activity:
            emails.append(
                {
                    "campaign_id": "c42",
                    "email_address": p["email"],
                    "absplit_group": group[p["variant"]],
                    "activity": activity,
                }
            )
        if p["unsub"]:
            unsubscribes.append(
                {
                    "email_address": p["email"],
                    "campaign_id": "c42",
                    "timestamp": iso(p["t_open"] + timedelta(minutes=1)),
                }
            )
    (folder / "sent_to.json").write_text(json.dumps(sent_to))
    (folder / "email_activity.json").write_text(
        json.dumps({"campaign_id": "c42", "emails": emails})
    )
    (folder / "unsubscribed.json").write_text(
        json.dumps({"campaign_id": "c42", "unsubscribes": unsubscribes})
    )


def _assigned_list(tmp_path, spec, rng) -> tuple[pd.DataFrame, list[str]]:
    """A recipient CSV with the team's labels, assigned as loopexp.assignment.assign does it (keyed
    hash
    of the address, mapped segments): the list and each row's variant; assignment.parquet."""
    table = recipients_csv(tmp_path / "recipients.csv", 8000, rng)
    recipients = pd.DataFrame(
        {
            "recipient_key": hash_addresses(table["Email"], load_hash_key()),
            "segment": table["Lifecycle"].map(LABELS),
        }
    )
    assignment = assign(recipients, spec)
    assignment.to_parquet(tmp_path / "assignment.parquet", index=False)
    by_key = dict(zip(assignment["recipient_key"], assignment["variant_id"], strict=True))
    return table, [by_key[k] for k in recipients["recipient_key"]]


@pytest.mark.integration
@pytest.mark.parametrize("provider", ["sendgrid", "mailchimp"])
def test_real_looking_campaign_through_ingest_and_run(tmp_path, monkeypatch, provider) -> None:
    from loopexp.cli import app

    monkeypatch.setenv("LOOPEXP_HASH_KEY", SECRET)
    rng = np.random.default_rng(11)
    spec_path = tmp_path / "welcome.yaml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path)
    table, variants = _assigned_list(tmp_path, spec, rng)

    people = simulate(list(table["Email"]), variants, rng)
    exports = tmp_path / "exports"
    exports.mkdir()
    (sendgrid_export if provider == "sendgrid" else mailchimp_export)(people, exports)

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(spec_path),
            "--events",
            str(exports),
            "--events-format",
            "sendgrid" if provider == "sendgrid" else "auto",
            "--assignment",
            str(tmp_path / "assignment.parquet"),
            "--out",
            str(out),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "ingest" / "ingest_summary.json").read_text())
    assert summary["input_records"] == (
        summary["events"] + summary["duplicates"] + summary["quarantined"]
    )
    n_apple = sum(p["apple"] and p["delivered"] for p in people)
    n_scanner = sum(p["scanner"] and p["delivered"] for p in people)
    assert summary["machine_opens"] == n_apple
    assert summary["bot_clicks"] == 3 * n_scanner
    if provider == "sendgrid":
        assert (summary["duplicates"], summary["quarantined"]) == (50, 1)
    # every event joined the assignment: the keys of ingest equal the keys of assign
    events = pd.read_parquet(out / "ingest" / "events.parquet")
    assignment = pd.read_parquet(tmp_path / "assignment.parquet")
    assert set(events["recipient_key"]) <= set(assignment["recipient_key"])

    decision = json.loads((out / "decision.json").read_text())["decision"]
    assert decision["status"] == "ship", decision
    assert decision["winner"] == "personal"
    # no raw address in anything ingest or run wrote
    addresses = {a.lower() for a in table["Email"]}
    for path in [*out.rglob("*.json"), *out.rglob("*.parquet"), *out.rglob("*.ipynb")]:
        text = path.read_bytes().decode("utf-8", "replace").lower()
        assert not any(a in text for a in list(addresses)[:500]), path


def _run_cli(spec_path: Path, tmp_path: Path, name: str, *extra: str):
    from loopexp.cli import app

    return CliRunner().invoke(
        app,
        [
            "run",
            str(spec_path),
            *extra,
            "--assignment",
            str(tmp_path / "assignment.parquet"),
            "--out",
            str(tmp_path / name),
            "--tracking-uri",
            f"sqlite:///{tmp_path / f'{name}.db'}",
        ],
    )


@pytest.mark.integration
def test_run_on_the_export_folder_named_in_the_spec(tmp_path, monkeypatch) -> None:
    """A cron's `loopexp run SPEC`: the spec names the folder; same decision as with --events."""
    monkeypatch.setenv("LOOPEXP_HASH_KEY", SECRET)
    rng = np.random.default_rng(11)
    spec_path = tmp_path / "campaign" / "welcome.yaml"
    spec_path.parent.mkdir()
    spec_path.write_text(SPEC + "events:\n  path: exports/sendgrid/\n  format: auto\n")
    spec = load_spec(spec_path)
    table, variants = _assigned_list(tmp_path, spec, rng)
    people = simulate(list(table["Email"]), variants, rng)
    exports = spec_path.parent / "exports" / "sendgrid"
    exports.mkdir(parents=True)
    sendgrid_export(people, exports)  # one day's export, split in two files as an ESP does
    lines = (exports / "sendgrid_2026-03-02.ndjson").read_text().splitlines(keepends=True)
    (exports / "sendgrid_2026-03-02.ndjson").unlink()
    half = len(lines) // 2
    (exports / "part-0001.ndjson").write_text("".join(lines[:half]))
    (exports / "part-0002.ndjson").write_text("".join(lines[half:]))

    from_spec = _run_cli(spec_path, tmp_path, "from_spec")
    assert from_spec.exit_code == 0, from_spec.output
    assert "part-0001.ndjson" in from_spec.output and "part-0002.ndjson" in from_spec.output
    summary = json.loads((tmp_path / "from_spec" / "ingest" / "ingest_summary.json").read_text())
    assert [Path(f["path"]).name for f in summary["files"]] == [
        "part-0001.ndjson",
        "part-0002.ndjson",
    ]
    assert sum(f["events"] for f in summary["files"]) == summary["events"]
    assert (summary["duplicates"], summary["quarantined"]) == (50, 1)
    assert (tmp_path / "from_spec" / "ingest" / "quarantine.parquet").exists()
    again = _run_cli(spec_path, tmp_path, "from_spec")  # the cron fires twice on the same folder
    assert again.exit_code == 0, again.output
    assert "already analysed" in again.output  # no second run

    with_events = _run_cli(
        spec_path, tmp_path, "with_events", "--events", str(exports), "--events-format", "sendgrid"
    )
    assert with_events.exit_code == 0, with_events.output
    a, b = (
        json.loads((tmp_path / n / "decision.json").read_text())
        for n in ("from_spec", "with_events")
    )
    assert a["decision"]["status"] == b["decision"]["status"] == "ship"
    assert a["decision"]["winner"] == b["decision"]["winner"] == "personal"
    assert a["decision"]["reasons"] == b["decision"]["reasons"]


def test_run_without_events_names_what_is_missing(tmp_path, monkeypatch) -> None:
    from loopexp.cli import app

    monkeypatch.setenv("LOOPEXP_HASH_KEY", SECRET)
    spec_path = tmp_path / "welcome.yaml"
    spec_path.write_text(SPEC)
    args = ["--assignment", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(app, ["run", str(spec_path), *args])
    assert res.exit_code == 2 and "--events" in res.output and "events:" in res.output
    spec_path.write_text(SPEC + "events: {path: exports/sendgrid, format: auto}\n")
    res = CliRunner().invoke(app, ["run", str(spec_path), *args])
    missing = str(tmp_path / "exports" / "sendgrid")
    assert res.exit_code == 2 and "does not exist" in res.output
    assert missing in res.output.replace("\n", "")
    (tmp_path / "exports" / "sendgrid").mkdir(parents=True)
    res = CliRunner().invoke(app, ["run", str(spec_path), *args])
    assert res.exit_code == 2 and "holds no export file" in res.output
    assert missing in res.output.replace("\n", "")
    assert "Traceback" not in res.output
    spec_path.write_text(SPEC + "events: {path: exports/sendgrid, format: csvish}\n")
    res = CliRunner().invoke(app, ["run", str(spec_path), *args])
    assert res.exit_code == 2 and "unknown events format 'csvish'" in res.output
