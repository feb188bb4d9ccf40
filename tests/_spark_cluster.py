"""A real Spark standalone cluster on 127.0.0.1 for tests: one master, N workers, separate JVMs.

Each daemon is started with pyspark's own ``bin/spark-class`` (which ``exec``s the JVM, so the
PID we hold is the JVM's) in a session of its own, on ports the JVM binds itself (``--port 0``,
``--webui-port 0``: no fixed port, other suites run beside us; the master's URL is read from its
log). The REST submission server, which would take the fixed port 6066, is disabled. Stopping is
by those PIDs (SIGTERM, then SIGKILL to the daemon's own process group, which holds the
executors a worker launched).

The driver side of a job is configured the way a real deployment is: ``SPARK_CONF_DIR`` with a
``spark-defaults.conf`` (small executors that fit the workers, the driver bound to 127.0.0.1),
plus ``LOOPEXP_SPARK_MASTER`` for loopexp's session builder (:meth:`SparkCluster.driver_env`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: What the daemons and drivers read from $SPARK_CONF_DIR/spark-defaults.conf.
DEFAULTS = {
    "spark.master.rest.enabled": "false",  # else the master binds the fixed port 6066
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.executor.memory": "512m",
    "spark.executor.cores": "1",
    "spark.cores.max": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
WORKER_MEMORY = "768m"  # per worker: room for one 512 MiB executor (+ overhead)
START_TIMEOUT_S = 90


def spark_home() -> Path:
    """pyspark's install folder: it ships ``bin/spark-class`` and the jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass
class SparkCluster:
    """A running cluster: the master URL, its daemons' PIDs, logs and the workers' folders."""

    url: str
    folder: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    work_dirs: list[Path] = field(default_factory=list)

    def daemon_env(self) -> dict[str, str]:
        return _daemon_env(self.folder)

    def driver_env(self) -> dict[str, str]:
        """The environment of a ``loopexp`` process that should run its Spark jobs here."""
        return {
            **_daemon_env(self.folder),
            "LOOPEXP_SPARK_MASTER": self.url,
            "LOOPEXP_SPARK_PARTITIONS": "4",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }

    def executor_logs(self) -> dict[Path, list[Path]]:
        """Per worker folder, the ``stderr`` files of the executors it launched (app-*/N/)."""
        return {w: sorted(w.glob("app-*/*/stderr")) for w in self.work_dirs}

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs
        )


def _daemon_env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_CONF_DIR": str(folder / "conf"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(folder / "local"),
        "SPARK_DAEMON_MEMORY": "384m",
    }


def _start(cluster: SparkCluster, name: str, args: list[str]) -> subprocess.Popen:
    log = cluster.folder / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cluster.daemon_env(),
            start_new_session=True,  # its own process group: the executors it forks stay in it
        )
    cluster.procs.append(proc)
    cluster.logs.append(log)
    return proc


def _wait_for(cluster: SparkCluster, proc: subprocess.Popen, log: Path, pattern: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match.group(0)
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: exited with {proc.returncode}\n{cluster.log_tail()}")
        time.sleep(0.25)
    raise RuntimeError(f"{log.name}: no {pattern!r} in {START_TIMEOUT_S} s\n{cluster.log_tail()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    # executors a worker launched and did not reap: its own process group, by its PID
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def spark_cluster(
    folder: Path,
    workers: int = 2,
    worker_memory: str = WORKER_MEMORY,
    executor_memory: str = DEFAULTS["spark.executor.memory"],
) -> Iterator[SparkCluster]:
    """Start a master and ``workers`` workers (1 core each); stop them by PID on exit.

    Tests keep the defaults (768 MiB workers, 512 MiB executors); bench/ gives more.
    """
    (folder / "conf").mkdir(parents=True, exist_ok=True)
    (folder / "local").mkdir(exist_ok=True)
    settings = {**DEFAULTS, "spark.executor.memory": executor_memory}
    (folder / "conf" / "spark-defaults.conf").write_text(
        "".join(f"{k} {v}\n" for k, v in settings.items())
    )
    cluster = SparkCluster(url="", folder=folder)
    try:
        master = _start(
            cluster,
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                *("--host", "127.0.0.1", "--port", "0", "--webui-port", "0"),
            ],
        )
        found = _wait_for(cluster, master, cluster.logs[0], r"spark://127\.0\.0\.1:\d+")
        cluster.url = found
        _wait_for(cluster, master, cluster.logs[0], r"elected leader")
        started = []
        for i in range(workers):
            work_dir = folder / f"worker-{i}"
            work_dir.mkdir()
            cluster.work_dirs.append(work_dir)
            args = [
                "org.apache.spark.deploy.worker.Worker",
                *("--host", "127.0.0.1", "--port", "0", "--webui-port", "0"),
                *("--cores", "1", "--memory", worker_memory, "--work-dir", str(work_dir)),
                cluster.url,
            ]
            started.append((_start(cluster, f"worker-{i}", args), cluster.logs[-1]))
        for proc, log in started:  # the workers start side by side
            _wait_for(cluster, proc, log, r"Successfully registered with master")
        yield cluster
    finally:
        for proc in reversed(cluster.procs):  # workers (and their executors) first, then master
            _stop(proc)
