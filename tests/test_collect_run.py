"""`loopexp run` on a raw webhook log: a campaign's SendGrid events arrive as signed webhooks at
the receiver, the spec names the receiver's folder (`events: {path: raw/}`), and the run decides
as it does on the export (same data as tests/test_ingest_e2e.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from loopexp.collect.app import create_app
from loopexp.collect.settings import CollectSettings
from loopexp.design.spec import load_spec
from tests import _collect_signing as sig
from tests.test_ingest_e2e import SECRET, SPEC, _assigned_list, _run_cli, sendgrid_export, simulate

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.mark.integration
def test_run_on_the_receivers_raw_log(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOOPEXP_HASH_KEY", SECRET)
    rng = np.random.default_rng(11)
    spec_path = tmp_path / "campaign" / "welcome.yaml"
    spec_path.parent.mkdir()
    spec_path.write_text(SPEC + "events:\n  path: raw/\n")
    table, variants = _assigned_list(tmp_path, load_spec(spec_path), rng)
    people = simulate(list(table["Email"]), variants, rng)
    sendgrid_export(people, tmp_path)  # the same events an export would hold, then as webhooks
    lines = (tmp_path / "sendgrid_2026-03-02.ndjson").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.endswith("}")]
    broken = [line.encode() for line in lines if not line.endswith("}")]
    private, public = sig.sendgrid_keys()
    settings = CollectSettings(
        out=spec_path.parent / "raw", instance="web-1", secrets={"sendgrid": [public]}
    )
    bodies = [sig.sendgrid_body(events[i : i + 500]) for i in range(0, len(events), 500)]
    with TestClient(create_app(settings)) as client:
        for body in [*bodies, *broken]:  # a cut-off body with a valid signature is stored too
            headers = sig.sign_sendgrid(private, body)
            assert client.post("/webhooks/sendgrid", content=body, headers=headers).is_success
    result = _run_cli(spec_path, tmp_path, "out")
    assert result.exit_code == 0, result.output
    ingested = json.loads((tmp_path / "out" / "ingest" / "ingest_summary.json").read_text())
    assert (ingested["duplicates"], ingested["quarantined"]) == (50, 1)  # retries, the cut body
    assert (tmp_path / "out" / "ingest" / "completeness.json").is_file()
    decision = json.loads((tmp_path / "out" / "decision.json").read_text())["decision"]
    assert (decision["status"], decision["winner"]) == ("ship", "personal"), decision
