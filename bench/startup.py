"""Start-up times of the ``loopexp`` command against the goals of issue #30.

Each measurement is a fresh process with ``PYTHONPATH`` set to one source tree; trees alternate
round by round (``--tree NAME=PATH``, e.g. ``main=/work/main`` beside this tree), so the ratios
survive a loaded machine. Wall seconds and CPU seconds (user + system of the child) are reported
with the load average at the start and end.

- ``--help``, ``validate SPEC``, ``init PATH``: until the process exits (goal ≤ 1 s);
- ``runs --campaign C`` on a local SQLite store with one logged iteration (goal ≤ 2 s);
- ``ui``: from the start of ``loopexp ui --campaign C`` until the link is printed and the runs
  page of the printed link answers (goal ≤ 10 s); then the server's process group is stopped.

    .venv/bin/python bench/startup.py --tree main=/work/main --rounds 3 --out startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
GOALS = {"--help": 1.0, "validate": 1.0, "init": 1.0, "runs": 2.0, "ui": 10.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}


def _timed(tree: Path, args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one ``loopexp ARGS`` run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "loopexp.cli", *args],
        cwd=cwd,
        env=_env(tree),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"loopexp {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _ui_ready(tree: Path, store: Path, campaign: str) -> float:
    """Seconds from starting ``loopexp ui`` until the printed link's page answers."""
    port = _free_port()
    start = time.perf_counter()
    uri = f"sqlite:///{store}"
    argv = ["ui", "--tracking-uri", uri, "--port", str(port), "--campaign", campaign]
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopexp.cli", *argv],
        env=_env(tree),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:
            seen += line.rstrip("\n")  # an older loopexp wrapped the link at 80 columns
            found = re.search(r"MLflow UI: (http\S+?#/experiments/\d+/runs\S*)", seen)
            if found and "(Ctrl-C" in seen:
                link = found.group(1)
                with urllib.request.urlopen(link, timeout=60) as resp:
                    resp.read()
                # The runs table's data: what the browser asks next.
                body = json.dumps({"experiment_ids": ["1"], "max_results": 50}).encode()
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/runs/search",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=60) as resp:
                    resp.read()
                return time.perf_counter() - start
        raise SystemExit("loopexp ui printed no link")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _store(tree: Path, work: Path) -> tuple[Path, str]:
    """A SQLite store with one logged iteration of the demo campaign (built once)."""
    store = work / "mlflow.db"
    if not store.exists():
        code = (
            "from pathlib import Path\n"
            "from loopexp import load_spec, simulate_campaign\n"
            "from loopexp.analysis.analyze import analyze_files\n"
            "from loopexp.sim.simulate import DEMO_EFFECTS\n"
            "from loopexp.track.tracking import log_run\n"
            f"w = Path({str(work)!r}); spec = load_spec({str(HERE / 'experiments/subject_line_demo.yaml')!r})\n"  # noqa: E501
            "ev, asg = simulate_campaign(spec, 5000, DEMO_EFFECTS, seed=1).write(w / 'data')\n"
            "_, res = analyze_files(spec, ev, asg)\n"
            f"log_run(res, spec, [res.write_json(w / 'results.json')], 'sqlite:///{store}')\n"
        )
        subprocess.run([sys.executable, "-c", code], env=_env(tree), check=True)
    return store, "spring-newsletter"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH, another tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ui", action="store_true", help="skip the ui measurement")
    parser.add_argument("--out", type=Path, help="write the raw figures as JSON")
    args = parser.parse_args()
    trees = {"this": HERE} | {n: Path(p) for n, p in (t.split("=", 1) for t in args.tree)}
    work = Path(tempfile.mkdtemp(prefix="loopexp-startup-"))
    spec = HERE / "experiments" / "subject_line_demo.yaml"
    store, campaign = _store(HERE, work)
    commands = {
        "--help": ["--help"],
        "validate": ["validate", str(spec)],
        "init": ["init", str(work / "new.yaml"), "--force"],
        "runs": ["runs", "--campaign", campaign, "--tracking-uri", f"sqlite:///{store}"],
    }
    figures: dict[str, dict[str, list[list[float]]]] = {n: {} for n in trees}
    load_start = os.getloadavg()
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for label, argv in commands.items():
                figures[name].setdefault(label, []).append(list(_timed(tree, argv, work)))
            if not args.no_ui:
                figures[name].setdefault("ui", []).append([_ui_ready(tree, store, campaign), 0])
    load_end = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    print(f"load average: start {load_start[0]:.2f}, end {load_end[0]:.2f} (1 min)")
    print("| command | goal (s) | " + " | ".join(f"{n} wall / CPU (s)" for n in trees) + " |")
    print("|---|---|" + "---|" * len(trees))
    for label, goal in GOALS.items():
        cells = []
        for name in trees:
            rows = figures[name].get(label)
            if not rows:
                cells.append("–")
                continue
            wall = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            cells.append(f"{wall:.2f} / {cpu:.2f}" if label != "ui" else f"{wall:.1f}")
        print(f"| `{label}` | {goal:g} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(
            json.dumps({"load": [load_start, load_end], "figures": figures}, indent=1)
        )


if __name__ == "__main__":
    main()
