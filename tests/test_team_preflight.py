"""The store's pre-flight names the problem and its fix: kinds, refused sign-in, old schema."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loopexp.track.store import (
    StoreConfigError,
    StoreKind,
    StoreNotReadyError,
    StoreUnreachableError,
    preflight,
    redact,
    store_kind,
)
from tests._team_servers import Team, free_port, loopexp_cmd
from tests.conftest import DEMO_SPEC


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("sqlite:///mlflow.db", StoreKind.FILE),
        ("file:///srv/mlruns", StoreKind.FILE),
        ("mlruns", StoreKind.FILE),
        ("postgresql+psycopg://u:p@db:5432/mlflow", StoreKind.DATABASE),
        ("postgresql://db/mlflow", StoreKind.DATABASE),
        ("mysql+pymysql://db/mlflow", StoreKind.DATABASE),
        ("https://mlflow.internal", StoreKind.SERVER),
        ("http://127.0.0.1:5000", StoreKind.SERVER),
    ],
)
def test_stores_are_classified_by_scheme(uri: str, kind: StoreKind) -> None:
    assert store_kind(uri) is kind


def test_an_unknown_scheme_is_refused_and_passwords_never_shown() -> None:
    with pytest.raises(StoreConfigError, match="unknown scheme 'ftp'"):
        store_kind("ftp://user:secret@host/x")
    assert redact("postgresql+psycopg://mlflow:s3cret@db:5432/mlflow") == (
        "postgresql+psycopg://mlflow:***@db:5432/mlflow"
    )


def test_a_server_that_does_not_answer_is_named_with_its_fix() -> None:
    with pytest.raises(StoreUnreachableError, match=r"not reachable.*loopexp server start"):
        preflight(f"http://127.0.0.1:{free_port()}")


@pytest.mark.integration
def test_a_refused_sign_in_stops_the_run_before_any_work(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "analyst")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(StoreNotReadyError, match=r"refused the sign-in.*MLFLOW_TRACKING_PASSWORD"):
        preflight(team.server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team.server.password("analyst"))
    assert preflight(team.server.url).user == "analyst"
    # through the command: exit 1 naming the fix, before any analysis (no attempt folder)
    sim = subprocess.run(
        loopexp_cmd(
            "simulate",
            str(DEMO_SPEC),
            "--out",
            str(tmp_path / "data"),
            "--recipients",
            "3000",
            "--seed",
            "2",
        ),
        env=team.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert sim.returncode == 0, sim.stderr
    env = {**team.client_env("analyst"), "MLFLOW_TRACKING_PASSWORD": "wrong"}
    done = subprocess.run(
        loopexp_cmd(
            "run",
            str(DEMO_SPEC),
            "--events",
            str(tmp_path / "data/events.parquet"),
            "--assignment",
            str(tmp_path / "data/assignment.parquet"),
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            team.server.url,
        ),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MLFLOW_TRACKING_USERNAME" in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_a_database_schema_older_than_mlflow_names_mlflow_db_upgrade(team: Team) -> None:
    import sqlalchemy
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.tracking import MlflowClient

    uri = team.pg.create_database("oldschema")
    MlflowClient(tracking_uri=uri).search_experiments()  # MLflow creates its tables
    assert preflight(uri).kind is StoreKind.DATABASE
    script = ScriptDirectory.from_config(_get_alembic_config(uri))
    previous = script.get_revision(script.get_current_head()).down_revision
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as conn:  # as an older MLflow left it
        conn.execute(
            sqlalchemy.text("UPDATE alembic_version SET version_num = :v"), {"v": previous}
        )
    engine.dispose()
    with pytest.raises(StoreNotReadyError) as old:
        preflight(uri)
    assert f"MLflow schema {previous}" in str(old.value)
    assert f"mlflow db upgrade '{uri}'" in str(old.value)


def test_a_database_that_does_not_answer_is_named() -> None:
    uri = f"postgresql+psycopg://postgres:pw@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(StoreUnreachableError, match=r"database .*:\*\*\*@127.0.0.1.*not reachable"):
        preflight(uri)


def test_list_runs_pages_and_keeps_the_latest_oldest_first(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from loopexp.track.tracking import list_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("paging")
    ids = []
    for i in range(5):
        ids.append(client.create_run(experiment_id, start_time=1_000 + i).info.run_id)
        if i % 2:
            client.set_terminated(ids[-1])
    assert [r.info.run_id for r in list_runs("paging", uri)] == ids
    assert [r.info.run_id for r in list_runs("paging", uri, latest=2)] == ids[3:]
    finished = list_runs("paging", uri, where="attributes.status = 'FINISHED'")
    assert [r.info.run_id for r in finished] == [ids[1], ids[3]]
