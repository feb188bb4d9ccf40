"""Real servers for the team tests: PostgreSQL (Debian's), moto's S3 server, the team MLflow server.

Each binds 127.0.0.1 on a port free at run time and is stopped by its PID. PostgreSQL's ``initdb``
and ``pg_ctl`` refuse to run as root, so under root (CI) they run as the ``postgres`` user in a
temporary folder that user owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def _pg_bin() -> Path:
    """Debian's newest installed PostgreSQL (``.ci/run`` installs it where missing)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
BUCKET = "loopexp-team"
#: The host name of the team server's --public-url (never resolved: sent as the Host header).
PUBLIC_HOST = "mlflow.team.test"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Postgres:
    """A PostgreSQL cluster in a temporary folder (trust auth on 127.0.0.1 only)."""

    root: Path
    port: int = 0
    pid: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def start(self, port: int | None = None) -> None:
        """Start on ``port`` (default: a free one); record the postmaster's PID."""
        for _ in range(5):
            self.port = port or free_port()
            opts = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            done = subprocess.run(
                _as_postgres(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "start",
                        "-w",
                        "-t",
                        "60",
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.root / "log"),
                        "-o",
                        opts,
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
                return
            if port:
                break
        raise RuntimeError(f"pg_ctl start failed: {done.stderr}{(self.root / 'log').read_text()}")

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT to the postmaster)."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            _wait_gone(self.pid)
            self.pid = 0

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)


MOTO_SCRIPT = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
while True:
    time.sleep(3600)
"""


@dataclass
class Moto:
    """moto's S3 server in its own process (port 0: the OS picks it; the process prints it)."""

    proc: subprocess.Popen
    port: int

    @classmethod
    def start(cls) -> Moto:
        proc = subprocess.Popen(
            [sys.executable, "-c", MOTO_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # one request log line per call
            text=True,
            env={**os.environ, **S3_ENV},
        )
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            proc.kill()
            raise RuntimeError(f"moto server did not start: {line!r}")
        return cls(proc, int(line))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def loopexp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "loopexp.cli", *args]


def run_loopexp(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``loopexp ARGS`` as a user runs it, output captured, never raising on its exit code."""
    return subprocess.run(
        loopexp_cmd(*args),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class TeamServer:
    """``loopexp server start`` on the team config (its own process group, stopped by PID)."""

    config_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    @property
    def config(self) -> dict:
        return json.loads((self.config_dir / "team.json").read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config['port']}"

    def password(self, role: str) -> str:
        return self.config["passwords"][role]

    def start(self, timeout: float = 180) -> None:
        log_path = self.config_dir / "server.log"
        seen = log_path.read_text().count("marketer (read-only)") if log_path.exists() else 0
        log = log_path.open("ab")
        self.proc = subprocess.Popen(
            loopexp_cmd("server", "start", "--config-dir", str(self.config_dir)),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        # ready when `server start` printed the sign-in lines (users exist)
        while log_path.read_text().count("marketer (read-only)") <= seen:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError((self.config_dir / "server.log").read_text()[-3000:])
            time.sleep(0.3)

    def _groups(self) -> list[int]:
        """Process groups of the server: `loopexp server start`'s and its `mlflow server`'s (which
        it starts in a session of its own)."""
        assert self.proc is not None
        groups = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:  # ppid
                    groups.append(int(fields[2]))  # pgrp
        return groups

    def _signal(self, groups: list[int], sig: int) -> None:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)

    def kill(self) -> None:
        """SIGKILL the whole server (the supervisor and its workers) at once: a crash."""
        if self.proc is not None:
            groups = self._groups()
            self._signal(groups, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self._reap(groups)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        groups = self._groups()
        self._signal(groups[:1], signal.SIGTERM)  # `server start` stops its server's group
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._signal(groups, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reap(groups)
        self.proc = None

    def _reap(self, groups: list[int]) -> None:
        """Wait until no process of the server's groups is left (its port is free again)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = []
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, 0)
                    alive.append(group)
            if not alive:
                return
            time.sleep(0.1)
        self._signal(groups, signal.SIGKILL)


@dataclass
class Team:
    """The whole team stack of one test session."""

    pg: Postgres
    moto: Moto
    server: TeamServer
    env: dict[str, str]

    def client_env(self, role: str = "analyst") -> dict[str, str]:
        """Environment of a loopexp process signed in as ``role`` on the team server."""
        return {
            **self.env,
            "MLFLOW_TRACKING_URI": self.server.url,
            "MLFLOW_TRACKING_USERNAME": role,
            "MLFLOW_TRACKING_PASSWORD": self.server.password(role),
        }

    def bucket_keys(self) -> list[str]:
        s3 = self.moto.s3()
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys


def start_team(root: Path, repo: Path) -> Team:
    """PostgreSQL + moto + `loopexp server init` and `start`; the caller stops it (stop_team)."""
    pg = Postgres(Path(tempfile.mkdtemp(prefix="loopexp-pg-")))
    moto = None
    try:
        pg.init()
        pg.start()
        uri = pg.create_database("mlflow")
        moto = Moto.start()
        moto.s3().create_bucket(Bucket=BUCKET)
        env = {
            **os.environ,
            **S3_ENV,
            "MLFLOW_S3_ENDPOINT_URL": moto.endpoint,
            "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        config_dir = root / "team-config"
        port = free_port()
        subprocess.run(
            loopexp_cmd(
                "server",
                "init",
                "--config-dir",
                str(config_dir),
                "--backend-store-uri",
                uri,
                "--artifacts-destination",
                f"s3://{BUCKET}/mlflow",
                "--port",
                str(port),
                "--workers",
                "1",
                # the name the team opens (the server listens on 127.0.0.1): allowed as Host
                "--public-url",
                f"http://{PUBLIC_HOST}:{port}",
            ),
            env=env,
            check=True,
            capture_output=True,
            cwd=root,
        )
        server = TeamServer(config_dir, env)
        server.start()
    except BaseException:
        if moto is not None:
            moto.stop()
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)
        raise
    return Team(pg, moto, server, env)


def stop_team(team: Team) -> None:
    team.server.stop()
    team.moto.stop()
    team.pg.stop()
    shutil.rmtree(team.pg.root, ignore_errors=True)
