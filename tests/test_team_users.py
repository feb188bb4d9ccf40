"""`loopexp server add-user` / `loopexp server users` against the session's real team server.

An analyst added later writes runs in a campaign another analyst started (the ``loopexp-analyst``
role: EDIT on every experiment); a marketer reads them and is refused a write; an existing user is
refused (exit 2) unless ``--reset-password``, which also changes the role.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests._team_servers import PUBLIC_HOST, Team, loopexp_cmd
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _server(team: Team, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        loopexp_cmd("server", *args, "--config-dir", str(team.server.config_dir)),
        env=team.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _password(done: subprocess.CompletedProcess) -> str:
    """The generated password `add-user` printed (its one line that shows it)."""
    (line,) = [ln for ln in done.stdout.splitlines() if "password (shown once" in ln]
    return line.rsplit(" ", 1)[1]


def _as(team: Team, user: str, password: str):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return MlflowClient(tracking_uri=team.server.url)


@pytest.fixture(autouse=True)
def _no_leaked_credentials(monkeypatch: pytest.MonkeyPatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, "")  # restored (or removed) after the test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a 401 answers at once


def _writes(client, experiment_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        run = client.create_run(experiment_id)
    except MlflowException as exc:
        assert exc.error_code == "PERMISSION_DENIED", exc
        return False
    client.set_terminated(run.info.run_id)
    return True


def test_add_users_list_them_and_refuse_a_second_add(team: Team) -> None:
    started = _as(team, "analyst", team.server.password("analyst")).create_experiment("team-users")
    added = _server(team, "add-user", "ana", "--role", "analyst")
    assert added.returncode == 0, added.stdout + added.stderr
    ana = _password(added)
    assert _writes(_as(team, "ana", ana), started)  # a campaign the built-in analyst started

    mia = "mia's own passphrase 42"
    given = _server(team, "add-user", "mia", "--role", "marketer", "--password-stdin", stdin=mia)
    assert given.returncode == 0, given.stdout + given.stderr
    assert mia not in given.stdout + given.stderr and "shown once" not in given.stdout
    marketer = _as(team, "mia", mia)
    assert len(marketer.search_runs([started])) == 1
    assert not _writes(marketer, started)

    again = _server(team, "add-user", "ana", "--role", "analyst")
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--reset-password" in again.stderr
    assert _writes(_as(team, "ana", ana), started)  # untouched: the old password still works
    assert _server(team, "add-user", "admin", "--role", "marketer").returncode == 2

    # --reset-password: a new password and the new role (ana reads only from now on)
    reset = _server(team, "add-user", "ana", "--role", "marketer", "--reset-password")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    new = _password(reset)
    assert new != ana
    assert not _writes(_as(team, "ana", new), started)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):  # the old password is refused (401)
        _as(team, "ana", ana).search_runs([started])

    listed = _server(team, "users")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    roles = {
        cells[0]: cells[1]
        for line in listed.stdout.splitlines()
        if len(cells := line.strip("│┃ ").replace("│", " ").split()) >= 2
    }
    assert {k: roles.get(k) for k in ("admin", "analyst", "marketer", "ana", "mia")} == {
        "admin": "admin",
        "analyst": "analyst",
        "marketer": "marketer",
        "ana": "marketer",
        "mia": "marketer",
    }
    for secret in [*team.server.config["passwords"].values(), ana, new, mia]:
        assert secret not in listed.stdout


def test_user_commands_name_a_missing_config(tmp_path: Path) -> None:
    done = subprocess.run(
        loopexp_cmd("server", "users", "--config-dir", str(tmp_path / "none")),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "loopexp server init" in done.stderr


def test_the_public_url_is_served_and_other_host_names_refused(team: Team) -> None:
    """`--public-url`: requests naming its host (and the UI's POSTs from its origin) are answered;
    another host name is refused (MLflow's DNS-rebinding protection stays on)."""
    import requests

    public = f"{PUBLIC_HOST}:{team.server.config['port']}"
    auth = ("marketer", team.server.password("marketer"))
    search = f"{team.server.url}/ajax-api/2.0/mlflow/runs/search"

    def post(host: str) -> int:
        headers = {"Host": host, "Origin": f"http://{host}"}
        body = {"experiment_ids": ["0"], "max_results": 1}
        return requests.post(search, json=body, headers=headers, auth=auth, timeout=30).status_code

    assert post(public) == 200
    assert post("evil.example:80") in (400, 403)
    log = (team.server.config_dir / "server.log").read_text()
    assert f"marketer (read-only) opens  http://{public}/#/experiments" in log


def test_server_command_allows_the_public_host_and_keeps_mlflows_defaults() -> None:
    from loopexp.core.errors import ConfigError
    from loopexp.track.team import TeamConfig, check_public_url, server_command

    config = TeamConfig("postgresql+psycopg://m@db/mlflow", "s3://b/p")
    assert "--allowed-hosts" not in server_command(config)  # MLflow's defaults as they are
    config.public_url = check_public_url("https://mlflow.acme.test")
    command = server_command(config)
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert "mlflow.acme.test" in hosts and {"127.0.0.1:*", "localhost", "10.*"} <= set(hosts)
    assert command[command.index("--cors-allowed-origins") + 1] == "https://mlflow.acme.test"
    with pytest.raises(ConfigError, match="--public-url"):
        check_public_url("mlflow.internal:5000")  # no scheme: not a URL a browser opens
