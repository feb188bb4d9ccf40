"""A real receiver under uvicorn for the fault tests and the bench, on a port chosen at run time.

Run as ``python -m tests._collect_servers``: binds 127.0.0.1 port 0 itself (no race for a port),
prints the port on the first line of stdout, then serves ``loopexp.collect.app.from_env`` (its
settings from the environment) until killed. ``--discard`` serves a bare handler that answers
200 without storing (the bench's ceiling); ``--no-fsync`` the receiver without fsync.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _discard_app():
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def moto_main() -> None:
    """moto's S3 in server mode on 127.0.0.1, a port of its own choosing (printed)."""
    from moto.server import ThreadedMotoServer

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def main(argv: list[str]) -> None:
    if "--moto" in argv:
        moto_main()
        return
    import uvicorn

    from loopexp.collect.app import create_app, from_env
    from loopexp.collect.settings import CollectSettings

    # a file-size limit (the fault test's full disk) must fail the write (EFBIG → 503), not kill
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if "--discard" in argv:
        app = _discard_app()
    elif "--no-fsync" in argv:
        app = create_app(CollectSettings.from_env(os.environ["LOOPEXP_COLLECT_OUT"], fsync=False))
    else:
        app = from_env()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class Receiver:
    """A receiver process and its URL."""

    proc: subprocess.Popen
    url: str

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process (SIGKILL: a crash; SIGTERM: a clean stop) and wait for it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=30)


def start(env: dict[str, str], *flags: str) -> Receiver:
    """Start a receiver; returns once ``/healthz`` answers (or ``/`` for ``--discard``)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._collect_servers", *flags],
        env=full_env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"receiver did not start (exit {proc.wait()})")
    url = f"http://127.0.0.1:{int(line)}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return Receiver(proc, url)
        except urllib.error.HTTPError:
            return Receiver(proc, url)  # the discard handler answers anything
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"receiver exited with {proc.returncode}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("receiver did not answer /healthz within 30 s")


@contextlib.contextmanager
def running(env: dict[str, str], *flags: str) -> Iterator[Receiver]:
    """A receiver stopped by its PID at the end (SIGTERM, then SIGKILL if it hangs)."""
    receiver = start(env, *flags)
    try:
        yield receiver
    finally:
        if receiver.proc.poll() is None:
            receiver.proc.send_signal(signal.SIGTERM)
            try:
                receiver.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                receiver.proc.kill()
                receiver.proc.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
