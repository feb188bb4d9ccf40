"""The silent-empty bug: a list labelled with the team's own segment names must never assign nobody.

Before the fix, a 1,000-row list labelled ``Existing Customer`` / ``Inactive`` produced an empty
assignment and exit 0, because labels outside the four lifecycle segments were dropped as "outside
the audience". Now an unmapped label is a clear error (or, if the spec says so, an exclusion with a
reason), and ``audience.segment_map`` maps the team's labels to the lifecycle segments.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from loopexp.assignment.assign import assign
from loopexp.cli import app
from loopexp.design.spec import load_spec, parse_spec
from tests.conftest import DEMO_SPEC

runner = CliRunner()
TEAM_MAP = {"Existing Customer": "existing_customer", "Inactive": "inactive"}


def labelled_list(n: int = 1_000) -> pd.DataFrame:
    labels = ["Existing Customer", "Inactive"]
    return pd.DataFrame(
        {
            "recipient_key": [f"cust-{i:05d}" for i in range(n)],
            "segment": [labels[i % 2] for i in range(n)],
        }
    )


def spec_with(audience_extra: dict) -> str:
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["audience"].update(audience_extra)
    return yaml.safe_dump(data, sort_keys=False)


def test_api_unmapped_labels_are_an_error_not_an_empty_assignment():
    with pytest.raises(ValueError, match="segment label") as info:
        assign(labelled_list(), load_spec(DEMO_SPEC))
    message = str(info.value)
    assert "'Existing Customer'" in message and "'Inactive'" in message
    assert "segment_map" in message  # says how to fix it


def test_cli_unmapped_labels_exit_non_zero_with_the_labels(tmp_path: Path):
    recipients = tmp_path / "recipients.csv"
    labelled_list().to_csv(recipients, index=False)
    result = runner.invoke(
        app,
        ["assign", str(DEMO_SPEC), "--recipients", str(recipients), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code != 0, result.output
    assert "Existing Customer" in result.output
    assert "segment_map" in result.output
    assert not (tmp_path / "o" / "assignment.parquet").exists()


def test_api_mapped_labels_assign_everyone():
    spec = parse_spec(spec_with({"segment_map": TEAM_MAP}))
    out = assign(labelled_list(), spec)
    assert len(out) == 1_000
    assert set(out["segment"]) == {"existing_customer", "inactive"}
    assert (out["segment"] == "existing_customer").sum() == 500


def test_cli_mapped_labels_assign_everyone(tmp_path: Path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(spec_with({"segment_map": TEAM_MAP}))
    recipients = tmp_path / "recipients.csv"
    labelled_list().to_csv(recipients, index=False)
    out = tmp_path / "o"
    result = runner.invoke(
        app, ["assign", str(spec_path), "--recipients", str(recipients), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assignment = pd.read_parquet(out / "assignment.parquet")
    assert len(assignment) == 1_000
    assert set(assignment["segment"]) == {"existing_customer", "inactive"}


def test_cli_nobody_assigned_is_an_error(tmp_path: Path):
    """Known segments all outside the audience: nobody to mail is an error, never exit 0."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(spec_with({"segments": ["prospect"]}))
    frame = labelled_list(10).assign(segment="inactive")
    recipients = tmp_path / "recipients.csv"
    frame.to_csv(recipients, index=False)
    result = runner.invoke(
        app, ["assign", str(spec_path), "--recipients", str(recipients), "--out", str(tmp_path)]
    )
    assert result.exit_code != 0, result.output
    assert "nobody" in result.output.lower()
