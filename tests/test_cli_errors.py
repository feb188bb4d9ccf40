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
from loopexp.cli import app, errors
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


# --- the error table: every loopexp exception has a documented exit code -------------------------


def _import_every_module() -> None:
    import importlib
    import pkgutil

    import loopexp

    for info in pkgutil.walk_packages(loopexp.__path__, "loopexp."):
        if not info.name.endswith("__main__"):  # running it is its only effect
            importlib.import_module(info.name)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _codes(cls: type[BaseException]) -> set[int]:
    """The exit codes of the most specific table rows ``cls`` falls under (one, if placed)."""
    rows = dict(errors._loaded_rows())
    matching = [key for key in rows if issubclass(cls, key)]
    nearest = [k for k in matching if not any(o is not k and issubclass(o, k) for o in matching)]
    return {rows[k].code for k in nearest}


def _misplaced(classes: set[type]) -> list[str]:
    """Classes the table cannot place (no row) or places twice (rows that disagree)."""
    documented = (errors.EXIT_FAILURE, errors.EXIT_INPUT, errors.EXIT_BUSY)
    bad = []
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        codes = _codes(cls)
        rule = errors.rule_for(cls)
        if len(codes) != 1 or rule is None or rule.code not in documented:
            bad.append(f"{cls.__module__}.{cls.__qualname__}: {sorted(codes)}")
    return bad


def test_every_loopexp_exception_maps_to_a_documented_exit_code() -> None:
    from loopexp.core.errors import LoopexpError

    _import_every_module()
    classes = {c for c in _subclasses(LoopexpError) if c.__module__.startswith("loopexp.")}
    assert len(classes) > 20  # the walk found the stages' exceptions, not only core's
    assert _misplaced(classes) == []
    for code in (errors.EXIT_FAILURE, errors.EXIT_INPUT, errors.EXIT_BUSY):
        assert f"{code} " in errors.EXIT_CODES_HELP  # documented in `loopexp --help`


def test_the_table_check_catches_an_exception_it_cannot_place() -> None:
    from loopexp.core.errors import InputError, LoopexpError, StateError

    class UnplacedError(LoopexpError):  # neither input nor state: which exit code?
        pass

    class BothError(InputError, StateError):  # bad input and a state of the world: 2 or 1?
        pass

    class NewInputError(InputError):  # a new subclass gets its parent's code
        pass

    misplaced = _misplaced({UnplacedError, BothError})
    assert len(misplaced) == 2
    assert "BothError: [1, 2]" in misplaced[0] and "UnplacedError: []" in misplaced[1]
    assert _misplaced({NewInputError}) == []


def test_table_rows_named_by_path_name_real_exception_classes() -> None:
    import importlib

    for key in errors.ERROR_TABLE:
        if isinstance(key, str):
            module, _, name = key.rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            assert isinstance(cls, type) and issubclass(cls, Exception), key


def test_specific_classes_keep_their_exit_codes() -> None:
    from loopexp.core.keys import HashKeyError
    from loopexp.design.spec import SpecError
    from loopexp.run.lock import ExperimentBusyError
    from loopexp.run.notebook import NotebookFailedError
    from loopexp.run.pipeline import NotLoggedError
    from loopexp.track.tracking import TrackingUnavailableError

    expected = {
        SpecError: EXIT_INPUT,
        HashKeyError: EXIT_INPUT,
        FileNotFoundError: EXIT_INPUT,
        ExperimentBusyError: EXIT_BUSY,
        NotLoggedError: errors.EXIT_FAILURE,
        TrackingUnavailableError: errors.EXIT_FAILURE,
        NotebookFailedError: errors.EXIT_FAILURE,
    }
    assert {cls: errors.rule_for(cls).code for cls in expected} == expected
    assert errors.rule_for(ZeroDivisionError) is None  # not placed: a bug in loopexp


def _raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException):
    """`loopexp validate` with its spec loader replaced by one that raises ``exc``."""

    def boom(path: object) -> None:
        raise exc

    monkeypatch.setattr("loopexp.design.spec.load_spec", boom)
    return runner.invoke(app, ["validate", "spec.yaml"])


@pytest.mark.parametrize(
    ("ename", "code", "words"),
    [
        ("SpecError", EXIT_INPUT, "the partly executed notebook is"),
        ("KeyError", 1, "the analysis notebook failed in cell 3: KeyError"),
    ],
)
def test_a_failed_notebook_exits_by_what_it_raised(
    monkeypatch: pytest.MonkeyPatch, ename: str, code: int, words: str
) -> None:
    from loopexp.run.notebook import NotebookFailedError

    failed = NotebookFailedError(Path("out.ipynb"), 3, ename, "bad row of ann@example.com")
    result = _raising(monkeypatch, failed)
    assert result.exit_code == code, result.output
    assert words in result.output and "out.ipynb" in result.output
    assert "ann@example.com" not in result.output


def test_a_new_loopexp_error_exits_by_its_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopexp.core.errors import InputError, StateError

    class NewInputError(InputError):
        pass

    result = _raising(monkeypatch, NewInputError("column x of ann@example.com is not a date"))
    assert result.exit_code == EXIT_INPUT
    assert "column x" in result.output and "ann@example.com" not in result.output
    result = _raising(monkeypatch, StateError("the store is read-only"))
    assert result.exit_code == errors.EXIT_FAILURE
    assert "the store is read-only" in result.output and "bug" not in result.output


def test_an_unexpected_error_says_it_is_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopexp.core import config

    monkeypatch.delenv(config.DEBUG, raising=False)
    result = _raising(monkeypatch, ZeroDivisionError("division by zero"))
    assert result.exit_code == errors.EXIT_FAILURE
    assert "unexpected ZeroDivisionError" in result.output
    assert "this is a bug in loopexp" in result.output
    assert "Traceback" not in result.output
    monkeypatch.setenv(config.DEBUG, "1")  # LOOPEXP_DEBUG: the traceback, not a message
    result = _raising(monkeypatch, ZeroDivisionError("division by zero"))
    assert isinstance(result.exception, ZeroDivisionError)


def test_the_help_lists_every_ingest_format_without_loading_ingest() -> None:
    from loopexp.cli.common import format_names
    from loopexp.events.ingest import FORMATS as INGEST_FORMATS

    # The help fills its {formats} in from this when shown (tests/test_cli_startup.py).
    assert format_names() == INGEST_FORMATS
