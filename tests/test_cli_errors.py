"""The CLI on bad input: a clear message and a documented exit code, in seconds, never a traceback.

The input checks run before a kernel starts, so each case here returns in about a second.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loopexp import TrueEffects, load_spec, simulate_campaign
from loopexp.cli import app
from loopexp.cli.errors import EXIT_BUSY, EXIT_INPUT
from loopexp.run.attempts import ATTEMPTS, LATEST, publish
from tests.conftest import DEMO_SPEC

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    return result


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("campaign")
    spec = Path(shutil.copy(DEMO_SPEC, folder / DEMO_SPEC.name))
    sim = simulate_campaign(load_spec(spec), 3_000, TrueEffects(), seed=1)
    events, assignment = sim.write(folder / "data")
    return {"spec": spec, "events": events, "assignment": assignment, "folder": folder}


def _run(campaign: dict[str, Path], assignment: Path, tmp_path: Path, events: Path | None = None):
    started = time.monotonic()
    result = _invoke(
        "run",
        str(campaign["spec"]),
        "--events",
        str(events or campaign["events"]),
        "--assignment",
        str(assignment),
        "--out",
        str(tmp_path / "out"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    return result, time.monotonic() - started


def test_plan_with_a_baseline_above_one_is_a_clear_error() -> None:
    result = _invoke("plan", str(DEMO_SPEC), "--baseline", "4")
    assert result.exit_code == EXIT_INPUT
    assert "--baseline 4" in result.output and "(0, 1)" in result.output


def test_assign_with_a_missing_recipient_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.csv"
    result = _invoke("assign", str(DEMO_SPEC), "--recipients", str(missing), "--out", str(tmp_path))
    assert result.exit_code == EXIT_INPUT
    assert "nobody.csv" in result.output


def test_assign_with_an_unparseable_recipient_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "recipients.parquet"
    bad.write_text("this is not parquet")
    result = _invoke("assign", str(DEMO_SPEC), "--recipients", str(bad), "--out", str(tmp_path))
    assert result.exit_code == EXIT_INPUT
    assert "recipients.parquet" in result.output


def test_help_shows_the_defaults_rich_markup_used_to_swallow() -> None:
    result = _invoke("run", "--help")
    text = " ".join(result.output.replace("│", " ").split())
    assert "sqlite:///mlflow.db in this folder" in text
    assert "runs/<name>-iter<N>" in text
    main = " ".join(_invoke("--help").output.replace("│", " ").split())
    assert "3 keep testing" in main and "0 decided" in main


def test_assignment_of_another_iteration_is_refused_before_a_kernel(
    campaign: dict[str, Path], tmp_path: Path
) -> None:
    frame = pd.read_parquet(campaign["assignment"])
    frame["salt"] = "spring-newsletter-subject-iter-0"
    frame["spec_sha256"] = "0" * 64
    other = tmp_path / "assignment-iter0.parquet"
    frame.to_parquet(other, index=False)
    result, seconds = _run(campaign, other, tmp_path)
    assert result.exit_code == EXIT_INPUT
    assert "salt" in result.output and "another iteration" in result.output
    assert seconds < 15  # no kernel was started (a kernel alone takes ~10-20 s here)
    assert not (tmp_path / "out" / ATTEMPTS).exists()


def test_assignment_with_the_same_salt_passes_the_salt_check(
    campaign: dict[str, Path], tmp_path: Path
) -> None:
    """The salt check refuses only another salt: same salt, but no shared key, fails later."""
    frame = pd.read_parquet(campaign["assignment"])
    frame["salt"] = load_spec(campaign["spec"]).salt
    frame["recipient_key"] = "other-" + frame["recipient_key"].astype(str)
    other = tmp_path / "assignment.parquet"
    frame.to_parquet(other, index=False)
    result, seconds = _run(campaign, other, tmp_path)
    assert result.exit_code == EXIT_INPUT
    assert "no event matches the assignment" in result.output
    assert seconds < 15


def test_assignment_missing_a_column_is_refused_before_a_kernel(
    campaign: dict[str, Path], tmp_path: Path
) -> None:
    frame = pd.read_parquet(campaign["assignment"]).drop(columns=["segment"])
    other = tmp_path / "no-segment.parquet"
    frame.to_parquet(other, index=False)
    result, seconds = _run(campaign, other, tmp_path)
    assert result.exit_code == EXIT_INPUT
    assert "no-segment.parquet" in result.output and "segment" in result.output
    assert seconds < 15


def test_assignment_of_another_spec_is_refused(campaign: dict[str, Path], tmp_path: Path) -> None:
    frame = pd.read_parquet(campaign["assignment"])
    frame.loc[frame.index[:10], "variant_id"] = "mystery"
    other = tmp_path / "other-spec.parquet"
    frame.to_parquet(other, index=False)
    result, _ = _run(campaign, other, tmp_path)
    assert result.exit_code == EXIT_INPUT
    assert "mystery" in result.output


def test_unreadable_events_file_is_named(campaign: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "events.parquet"
    broken.write_bytes(b"")
    result, _ = _run(campaign, campaign["assignment"], tmp_path, events=broken)
    assert result.exit_code == EXIT_INPUT
    text = "".join(result.output.split())
    # The file is named, and the message says what is wrong with it (here: it is empty).
    assert "".join(str(broken).split()) in text and "empty(0bytes)" in text


def test_publishing_a_new_attempt_leaves_no_file_of_the_last(tmp_path: Path) -> None:
    """A clean re-run keeps no stale quarantine file: only the new attempt's files are current."""
    out = tmp_path / "out"
    first = out / ATTEMPTS / "1"
    second = out / ATTEMPTS / "2"
    for folder, files in (
        (first, ["decision.json", "quarantine.parquet"]),
        (second, ["decision.json"]),
    ):
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_text(folder.name)
    publish(out, first, {"state": "logged", "attempt_id": "1"})
    assert (out / "quarantine.parquet").read_text() == "1"
    publish(out, second, {"state": "logged", "attempt_id": "2"})
    assert (out / "decision.json").read_text() == "2"
    assert not (out / "quarantine.parquet").exists()
    assert '"attempt_id": "2"' in (out / LATEST).read_text()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("truncated.parquet", "truncate"),
        ("json.parquet", b'{"event_id": "e1", "recipient_key": "k"}\n'),
        ("binary.csv", bytes(range(256)) * 64),
        ("header-only.csv", b"event_id,provider\n"),
    ],
)
def test_unreadable_or_incomplete_events_are_refused_naming_the_file(
    campaign: dict[str, Path], tmp_path: Path, name: str, content: object
) -> None:
    broken = tmp_path / name
    if content == "truncate":
        data = campaign["events"].read_bytes()
        broken.write_bytes(data[: len(data) // 2])
    else:
        broken.write_bytes(content)
    result, seconds = _run(campaign, campaign["assignment"], tmp_path, events=broken)
    assert result.exit_code == EXIT_INPUT, result.output
    assert name in "".join(result.output.split())
    assert seconds < 15


def test_a_run_waits_for_the_experiments_lock_then_exits_busy(
    campaign: dict[str, Path], tmp_path: Path
) -> None:
    from loopexp.run.lock import experiment_lock
    from loopexp.track.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with experiment_lock(load_spec(campaign["spec"]), uri, timeout=1):  # another run holds it
        result = _invoke(
            "run", str(campaign["spec"]), "--events", str(campaign["events"]),
            "--assignment", str(campaign["assignment"]), "--out", str(tmp_path / "out"),
            "--tracking-uri", uri, "--lock-timeout", "0.5",
        )  # fmt: skip
    assert result.exit_code == EXIT_BUSY, result.output
    assert "holds the lock" in result.output
    assert not (tmp_path / "out" / ATTEMPTS).exists()
