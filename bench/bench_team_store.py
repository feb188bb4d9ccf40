"""The team store measured side by side with SQLite (issue #25's two figures).

1. One iteration's logging: ``loopexp upload`` of the same analysed attempt (notebook, HTML report,
   figures, results, decision, spec: exactly what a run logs) to a local SQLite store, to the team
   server (PostgreSQL + S3 through moto, basic-auth) and directly to PostgreSQL, alternated,
   ``--reps`` times each; medians.
2. ``loopexp runs --campaign`` and the closed-loop report's run lookup with 1,000 iterations of one
   campaign in the store (seeded through MLflow's client straight into PostgreSQL, 8 threads).

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_team_store.py`` (a few minutes; starts and stops
its own PostgreSQL, moto and ``loopexp server start``, as the tests do).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from loopexp.run.pipeline import upload  # noqa: E402
from loopexp.track.closed_loop import campaign_runs  # noqa: E402
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


def _seed(uri: str, campaign: str, n: int) -> None:
    """``n`` FINISHED iterations of one campaign, with tags, params and metrics like real runs."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(campaign)

    def one(i: int) -> None:
        run = client.create_run(experiment_id, run_name=f"#{i} SHIP personal +5%")
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(f"decision.m{k}", float(k), now, 0) for k in range(12)],
            params=[Param(f"spec.p{k}", str(k)) for k in range(10)],
            tags=[
                RunTag("loopexp.campaign", campaign),
                RunTag("loopexp.iteration", str(i)),
                RunTag("loopexp.summary", f"iteration {i}: personal wins"),
            ],
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    team = start_team(work, ROOT)
    try:
        os.environ.update({k: v for k, v in team.client_env("analyst").items()})
        os.environ.pop("MLFLOW_TRACKING_URI")
        os.environ["LOOPEXP_ARTIFACT_ROOT"] = f"s3://{BUCKET}/direct"
        os.environ["LOOPEXP_LOCK_DIR"] = str(work / "locks")
        attempt = _analysed_attempt(work, team.env)
        size = sum(p.stat().st_size for p in attempt.rglob("*") if p.is_file())
        stores = {
            "sqlite": f"sqlite:///{work / 'bench.db'}",
            "team server": team.server.url,
            "postgresql direct": team.pg.create_database("direct"),
        }
        times = _time_uploads(attempt, stores, args.reps)
        print(f"load average before/after: {os.getloadavg()}")
        print(f"one iteration's logging ({size / 1e6:.1f} MB of artifacts), median of {args.reps}:")
        base = statistics.median(times["sqlite"])
        for name, values in times.items():
            med = statistics.median(values)
            print(
                f"  {name:18s} {med:6.2f} s  ({med / base:.2f}x sqlite)  all: "
                + " ".join(f"{v:.2f}" for v in values)
            )

        started = time.perf_counter()
        _seed(team.pg.uri("mlflow"), "bench-1000", args.runs)
        print(f"seeded {args.runs} runs in {time.perf_counter() - started:.1f} s")
        url = team.server.url
        listed = _median_time(lambda: list_runs("bench-1000", url))
        lookup = _median_time(lambda: campaign_runs("bench-1000", url))
        assert len(list_runs("bench-1000", url)) == args.runs
        cli = _median_time(
            lambda: subprocess.run(
                loopexp_cmd("runs", "--campaign", "bench-1000", "--tracking-uri", url),
                env=team.client_env("analyst"),
                capture_output=True,
                check=True,
            )
        )
        cli_one = _median_time(
            lambda: subprocess.run(
                loopexp_cmd("runs", "--campaign", "spring-newsletter", "--tracking-uri", url),
                env=team.client_env("analyst"),
                capture_output=True,
                check=True,
            )
        )
        print(f"with {args.runs} iterations of one campaign on the team server (median of 3):")
        print(f"  list_runs (search, filter by experiment, pages of 1,000)  {listed:.2f} s")
        print(f"  report's run lookup (campaign_runs)                      {lookup:.2f} s")
        print(f"  `loopexp runs --campaign` wall time (process start incl.) {cli:.2f} s")
        print(f"  same command on a 5-run campaign (start-up cost)          {cli_one:.2f} s")
        print(f"load average: {os.getloadavg()}")
    finally:
        stop_team(team)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
