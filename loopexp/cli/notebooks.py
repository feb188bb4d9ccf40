"""``loopexp notebooks`` and ``lab``: the shipped notebooks for someone who installed the wheel.

A wheel user has no checkout: ``notebooks DIR`` copies the shipped notebooks into a folder of
theirs, and ``lab`` opens that copy in JupyterLab started by this Python (``python -m jupyterlab``)
so the notebooks' ``python3`` kernel is the environment loopexp is installed in.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loopexp.cli.common import console
from loopexp.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, error, fail


def copy_notebooks(folder: Path, force: bool = False) -> list[Path]:
    """Copy the shipped notebooks into ``folder``; return the copies' paths.

    Refuses (exit 2) to overwrite a notebook already there unless ``force``: it may hold work.
    """
    from loopexp.design.resources import notebooks_dir  # noqa: PLC0415 (fast --help)

    shipped = sorted(notebooks_dir().glob("*.ipynb"))
    if folder.exists() and not folder.is_dir():
        fail(f"{folder} is a file; give a folder for the notebooks")
    clash = [p.name for p in shipped if (folder / p.name).exists()]
    if clash and not force:
        fail(
            f"{folder} already has {', '.join(clash)}; pass --force to overwrite them, "
            "or choose another folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(p, folder / p.name)) for p in shipped]


def notebooks(
    folder: Annotated[Path, typer.Argument(help="folder to copy the notebooks into")],
    force: Annotated[bool, typer.Option(help="overwrite notebooks already in FOLDER")] = False,
) -> None:
    """Copy the shipped notebooks (analysis, planning, send time, closed-loop report) to FOLDER."""
    copies = copy_notebooks(folder, force)
    for path in copies:
        console.print(f"  {escape(str(path))}")
    console.print(
        f"{len(copies)} notebooks copied. Open them with: loopexp lab {escape(str(folder))}",
        soft_wrap=True,
    )


def lab(
    folder: Annotated[
        Path, typer.Argument(help="notebook folder (the shipped notebooks are copied in if new)")
    ] = Path("loopexp-notebooks"),
    port: Annotated[
        int, typer.Option(help="port on 127.0.0.1 (JupyterLab tries the next ones if taken)")
    ] = 8888,
    browser: Annotated[bool, typer.Option(help="open a browser tab")] = True,
) -> None:
    """Open the notebooks in JupyterLab, with this Python's kernel (needs loopexp[lab])."""
    if importlib.util.find_spec("jupyterlab") is None:
        fail("JupyterLab is not installed here: pip install 'loopexp[lab]' (or jupyterlab)")
    if not any(folder.glob("*.ipynb")):
        copy_notebooks(folder)
        console.print(f"copied the shipped notebooks into {escape(str(folder))}")
    command = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.root_dir={folder.resolve()}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.open_browser={browser}",
    ]  # fmt: skip
    if os.geteuid() == 0:  # containers and CI run as root; JupyterLab refuses root unless told
        command.append("--ServerApp.allow_root=True")
    # In the foreground: JupyterLab prints its URL and handles Ctrl-C itself (it asks to
    # confirm); this process ignores SIGINT meanwhile and returns when JupyterLab has stopped.
    proc = subprocess.Popen(command)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if code not in (0, -signal.SIGINT, EXIT_INTERRUPTED):
        error(f"JupyterLab exited with code {code}", EXIT_FAILURE)
