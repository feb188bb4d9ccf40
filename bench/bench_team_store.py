"""The team store measured side by side with SQLite (issue #25's two figures).

1. One iteration's logging: ``loopexp upload`` of the same analysed attempt (notebook, HTML report,
   figures, results, decision, spec: exactly what a run logs) to a local SQLite store, to the team
   server (PostgreSQL + S3 through moto, basic-auth) and directly to PostgreSQL, alternated,
   ``--reps`` times each; medians.
   The HTTP requests of one upload to the team server are counted in this process (every request
   MLflow's client sends goes through ``requests.Session.send``), by method and endpoint.
2. ``loopexp runs --campaign`` and the closed-loop report with 1,000 iterations of one campaign in
   the store: each seeded iteration is a copy of the real run's params, metrics and tags (its
   digest with its iteration number), written through MLflow's client straight into PostgreSQL
   (8 threads). Measured: the search through MLflow's REST API (loopexp.track.rest) beside MLflow's
   client, the report built from the runs' digests (no download), and both commands as processes.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_team_store.py`` (a few minutes; starts and stops
its own PostgreSQL, moto and ``loopexp server start``, as the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from loopexp.core import tags as tag  # noqa: E402
from loopexp.run.pipeline import upload  # noqa: E402
from loopexp.track.closed_loop import build_report, campaign_runs  # noqa: E402
from loopexp.track.tracking import list_runs  # noqa: E402
from tests._team_servers import BUCKET, loopexp_cmd, start_team, stop_team  # noqa: E402


def _analysed_attempt(work: Path, env: dict[str, str]) -> Path:
    """One real `loopexp run` on a SQLite store; its attempt folder is what the uploads log."""
    spec = Path(shutil.copy(ROOT / "experiments" / "subject_line_demo.yaml", work))
    data = work / "data"
    for args in (
        ["simulate", str(spec), "--out", str(data), "--recipients", "20000", "--seed", "4"],
        [
            "run",
            str(spec),
            "--events",
            str(data / "events.parquet"),
            "--assignment",
            str(data / "assignment.parquet"),
            "--out",
            str(work / "out"),
            "--tracking-uri",
            f"sqlite:///{work / 'seed.db'}",
        ],
    ):
        done = subprocess.run(
            loopexp_cmd(*args), env=env, cwd=work, capture_output=True, text=True, check=False
        )
        if done.returncode not in (0, 3):
            raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return next((work / "out" / "attempts").iterdir())


def _time_uploads(attempt: Path, stores: dict[str, str], reps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in stores}
    for rep in range(reps):
        for name, uri in stores.items():  # alternated: a loaded machine slows all alike
            copy = attempt.parent.parent.parent / f"up-{name}-{rep}" / "attempts" / attempt.name
            shutil.copytree(attempt, copy)
            started = time.perf_counter()
            upload(copy, tracking_uri=uri, force=True)
            times[name].append(time.perf_counter() - started)
    return times


def _count_requests(attempt: Path, uri: str) -> Counter:
    """The HTTP requests of one upload to ``uri``, by method and endpoint (run ids dropped)."""
    import requests  # noqa: PLC0415

    seen: Counter = Counter()
    original = requests.Session.send

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        path = urlparse(request.url).path
        path = re.sub(r"/artifacts/.*", "/artifacts/…", re.sub(r"[0-9a-f]{32}", "<run>", path))
        seen[f"{request.method} {path}"] += 1
        return original(self, request, **kwargs)

    copy = attempt.parent.parent.parent / "up-counted" / "attempts" / attempt.name
    shutil.copytree(attempt, copy)
    requests.Session.send = send  # type: ignore[method-assign]
    try:
        upload(copy, tracking_uri=uri, force=True)
    finally:
        requests.Session.send = original  # type: ignore[method-assign]
    return seen


def _template(uri: str, campaign: str) -> tuple[dict, dict, dict]:
    """Params, metrics and tags of the campaign's newest analysed run (what a real run logs)."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(campaign)
    run = client.search_runs([experiment.experiment_id], max_results=1)[0]
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log")}
    return run.data.params, run.data.metrics, tags


def _seed(uri: str, campaign: str, n: int, template: tuple[dict, dict, dict]) -> None:
    """``n`` FINISHED iterations of one campaign, each a copy of a real run (its own iteration)."""
    params, metrics, tags = template
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(campaign)
    digest = json.loads(tags[tag.DIGEST])

    def one(i: int) -> None:
        run = client.create_run(experiment_id, run_name=f"#{i} {tags.get('mlflow.runName', '')}")
        now = int(time.time() * 1000)
        own = {**tags, tag.CAMPAIGN: campaign, tag.ITERATION: str(i)}
        own[tag.DIGEST] = json.dumps({**digest, "iteration": i}, separators=(",", ":"))
        own.pop("mlflow.runName", None)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in own.items()],
        )
        client.set_terminated(run.info.run_id)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(1, n + 1)))


def _median_time(func, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _mlflow_client_list(campaign: str, uri: str) -> list:
    """Every run through MLflow's client (what list_runs did before the REST reader)."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(campaign)
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id], "", max_results=1000, page_token=token
        )
        runs += page
        token = page.token
        if not token:
            return runs


def _process(team, *args: str) -> float:
    return _median_time(
        lambda: subprocess.run(
            loopexp_cmd(*args, "--tracking-uri", team.server.url),
            env=team.client_env("analyst"),
            capture_output=True,
            check=True,
        )
    )


def _logging(team, work: Path, attempt: Path, reps: int) -> dict[str, str]:
    size = sum(p.stat().st_size for p in attempt.rglob("*") if p.is_file())
    stores = {
        "sqlite": f"sqlite:///{work / 'bench.db'}",
        "team server": team.server.url,
        "postgresql direct": team.pg.create_database("direct"),
    }
    times = _time_uploads(attempt, stores, reps)
    print(f"load average: {os.getloadavg()}")
    print(f"one iteration's logging ({size / 1e6:.1f} MB of artifacts), median of {reps}:")
    base = statistics.median(times["sqlite"])
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"  {name:18s} {med:6.2f} s  ({med / base:.2f}x sqlite)  all: "
            + " ".join(f"{v:.2f}" for v in values)
        )
    counted = _count_requests(attempt, team.server.url)
    print(f"HTTP requests of one upload to the team server: {sum(counted.values())}")
    for what, n in counted.most_common():
        print(f"  {n:3d}  {what}")
    return stores


def _reading(team, work: Path, runs: int, template_uri: str) -> None:
    _seed(team.pg.uri("mlflow"), "bench-1000", runs, _template(template_uri, "spring-newsletter"))
    url = team.server.url
    assert len(list_runs("bench-1000", url)) == runs
    timed = {
        "search, every run: MLflow's client (before)": lambda: _mlflow_client_list(
            "bench-1000", url
        ),
        "search, every run: REST, no MLflow (list_runs)": lambda: list_runs("bench-1000", url),
        "report's run lookup (campaign_runs, REST)": lambda: campaign_runs("bench-1000", url),
        "closed-loop report built (build_report: lookup + digests)": lambda: build_report(
            "bench-1000", url, work / "report-work"
        ),
    }
    print(f"load average: {os.getloadavg()}")
    print(f"with {runs} iterations of one campaign on the team server (median of 3):")
    for name, func in timed.items():
        print(f"  {name:60s} {_median_time(func):6.2f} s")
    html = str(work / "bench-report.html")
    for name, args in {
        "`loopexp runs --campaign` (latest 50)": ("runs", "--campaign", "bench-1000"),
        "`loopexp runs --campaign --last 0` (all)": (
            "runs",
            "--campaign",
            "bench-1000",
            "--last",
            "0",
        ),
        "`loopexp runs` on a 5-run campaign": ("runs", "--campaign", "spring-newsletter"),
        "`loopexp report --no-log` (HTML of every iteration)": (
            "report",
            "--campaign",
            "bench-1000",
            "--no-log",
            "--out",
            html,
        ),
    }.items():
        print(f"  {name:60s} {_process(team, *args):6.2f} s  (process, start-up incl.)")
    print(f"load average: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000, help="0: skip the reading part")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    team = start_team(work, ROOT)
    try:
        os.environ.update({k: v for k, v in team.client_env("analyst").items()})
        os.environ.pop("MLFLOW_TRACKING_URI")
        os.environ["LOOPEXP_ARTIFACT_ROOT"] = f"s3://{BUCKET}/direct"
        os.environ["LOOPEXP_LOCK_DIR"] = str(work / "locks")
        attempt = _analysed_attempt(work, team.env)
        stores = _logging(team, work, attempt, args.reps)
        if args.runs:
            _reading(team, work, args.runs, stores["sqlite"])
    finally:
        stop_team(team)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
