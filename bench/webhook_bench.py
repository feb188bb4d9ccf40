"""Webhook receiver throughput and acknowledgement latency, side by side on one machine.

Three servers, each a real uvicorn process on 127.0.0.1 (``tests/_collect_servers.py``):
``fsync`` (the receiver as shipped: verify, append, fsync before 200), ``nofsync`` (the same
without fsync) and ``discard`` (a bare ASGI handler that reads the body and answers 200: the
ceiling). The load generator sends signed SendGrid batches of ``--batch`` events (pre-signed, so
signing is not measured) over ``--conns`` keep-alive connections:

* peak: closed loop for ``--seconds``; accepted events per second (200s × batch / time);
* latency: open loop at half the fsync server's peak rate, p50/p99 of the acknowledgement time.

Rounds go round robin over the servers (ratios survive a loaded machine); RSS of each server is
read from /proc before and after. The load average is printed beside the figures.

    .venv/bin/python bench/webhook_bench.py --workdir /work/bench-data/webhook --rounds 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import _collect_signing as sig  # noqa: E402
from tests._collect_servers import running  # noqa: E402


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted seconds, in milliseconds."""
    return values[int(q * (len(values) - 1))] * 1000


def _batches(private, n_batches: int, size: int) -> list[tuple[bytes, dict]]:
    out = []
    for b in range(n_batches):
        body = sig.sendgrid_body([sig.sendgrid_event(b * size + i) for i in range(size)])
        out.append((body, sig.sign_sendgrid(private, body)))
    return out


def _conn(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def peak(port: int, batches, conns: int, seconds: float) -> tuple[int, int, float]:
    """Closed loop: (200s, non-200s, elapsed)."""
    ok, bad = [0], [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        c = _conn(port)
        i = k
        while time.perf_counter() < stop:
            body, headers = batches[i % len(batches)]
            i += conns
            c.request("POST", "/webhooks/sendgrid", body, headers)
            r = c.getresponse()
            r.read()
            with lock:
                (ok if r.status == 200 else bad)[0] += 1
        c.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok[0], bad[0], time.perf_counter() - t0


def paced(port: int, batches, conns: int, rate: float, seconds: float) -> list[float]:
    """Open loop at ``rate`` requests/s over ``conns`` connections: acknowledgement latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    n_total = int(rate * seconds)

    def worker(k: int) -> None:
        c = _conn(port)
        for n in range(k, n_total, conns):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body, headers = batches[n % len(batches)]
            c.request("POST", "/webhooks/sendgrid", body, headers)
            r = c.getresponse()
            r.read()
            # from the scheduled send time: a late start (the generator queued) counts too
            with lock:
                latencies.append(time.perf_counter() - due)
        c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def soak(args, batches, public: str) -> None:
    """The fsync receiver at ``--goal-rate`` for ``--soak`` seconds: RSS every 30 s stays flat."""
    out = Path(args.workdir) / "soak"
    shutil.rmtree(out, ignore_errors=True)
    env = {
        "LOOPEXP_COLLECT_OUT": str(out),
        "LOOPEXP_SENDGRID_VERIFICATION_KEY": public,
        "LOOPEXP_COLLECT_INSTANCE": "soak",
    }
    samples: list[tuple[float, float, float]] = []
    with running(env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        done = threading.Event()
        lat: list[float] = []

        def load() -> None:
            lat.extend(paced(port, batches, args.conns, args.goal_rate / args.batch, args.soak))
            done.set()

        threading.Thread(target=load).start()
        t0 = time.perf_counter()
        while not done.wait(30):
            for sealed in out.glob("*.wlog"):  # bounded disk: sealed segments are not needed
                sealed.unlink()
            samples.append((time.perf_counter() - t0, _rss_mb(server.proc.pid), os.getloadavg()[0]))
            print(f"soak {samples[-1][0]:5.0f} s: RSS {samples[-1][1]:.1f} MB, load "
                  f"{samples[-1][2]:.2f}", flush=True)  # fmt: skip
    lat.sort()
    report = {
        "soak_s": args.soak,
        "rate_events_per_s": args.goal_rate,
        "requests": len(lat),
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
        "rss_mb": [(round(t), round(r, 1)) for t, r, _ in samples],
        "load_average": [round(a, 2) for _, _, a in samples],
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/work/bench-data/webhook")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--goal-rate", type=float, default=10_000, help="events/s: half the goal")
    ap.add_argument("--soak", type=float, default=0, help="seconds of a soak run (only that)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    private, public = sig.sendgrid_keys()
    batches = _batches(private, 20, args.batch)
    if args.soak:
        soak(args, batches, public)
        return
    work = Path(args.workdir)
    impls = {"fsync": (), "nofsync": ("--no-fsync",), "discard": ("--discard",)}
    results: dict[str, dict[str, list]] = {
        k: {"eps": [], "p50": [], "p99": [], "g50": [], "g99": [], "rss": []} for k in impls
    }
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        for name, flags in impls.items():
            out = work / f"{name}-{rnd}"
            shutil.rmtree(out, ignore_errors=True)
            env = {
                "LOOPEXP_COLLECT_OUT": str(out),
                "LOOPEXP_SENDGRID_VERIFICATION_KEY": public,
                "LOOPEXP_COLLECT_INSTANCE": "bench",
            }
            with running(env, *flags) as server:
                port = int(server.url.rsplit(":", 1)[1])
                rss0 = _rss_mb(server.proc.pid)
                peak(port, batches, args.conns, 1.0)  # warm-up
                ok, bad, elapsed = peak(port, batches, args.conns, args.seconds)
                eps = ok * args.batch / elapsed
                rate = (results["fsync"]["eps"] or [eps])[-1] / args.batch / 2
                lat = sorted(paced(port, batches, args.conns, rate, args.seconds))
                goal_rate = args.goal_rate / args.batch
                goal = sorted(paced(port, batches, args.conns, goal_rate, 2 * args.seconds))
                rss1 = _rss_mb(server.proc.pid)
            p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
            g50, g99 = _pct(goal, 0.5), _pct(goal, 0.99)
            results[name]["g50"].append(g50)
            results[name]["g99"].append(g99)
            results[name]["eps"].append(eps)
            results[name]["p50"].append(p50)
            results[name]["p99"].append(p99)
            results[name]["rss"].append((rss0, rss1))
            print(
                f"round {rnd} {name:8s} {eps:9.0f} events/s (refused {bad}); at "
                f"{rate * args.batch:7.0f} events/s: p50 {p50:6.1f} ms p99 {p99:6.1f} ms; at "
                f"{args.goal_rate:.0f}/s: p50 {g50:5.1f} ms p99 {g99:6.1f} ms; "
                f"RSS {rss0:.0f}→{rss1:.0f} MB; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
    summary = {
        name: {
            "events_per_s_median": statistics.median(r["eps"]),
            "p50_ms_median": statistics.median(r["p50"]),
            "p99_ms_median": statistics.median(r["p99"]),
            "goal_rate_p50_ms_median": statistics.median(r["g50"]),
            "goal_rate_p99_ms_median": statistics.median(r["g99"]),
            "rss_mb": r["rss"],
        }
        for name, r in results.items()
    }
    summary["load_average"] = {"before": load_before, "after": os.getloadavg()}
    summary["batch"], summary["conns"], summary["cores"] = args.batch, args.conns, os.cpu_count()
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
