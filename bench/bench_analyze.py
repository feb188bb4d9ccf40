"""Benchmark: one ``analyze`` of 1,000 arm x metric comparisons, and what multiplicity costs.

The table has 20 challengers x 11 metrics (the issue's size; ``--metrics 10`` for the earlier
figure) in the whole audience (220 comparisons) and in four segments (880 more), built directly
from sufficient statistics. Side by side in one run:

* ``analyze`` as it is (score / Welch-Fieller tests and intervals, numpy Holm, beta-binomial);
* the multiplicity step alone, numpy (:func:`loopexp.stats.adjust_pvalues`) against statsmodels'
  ``multipletests``, which calls ``gc.collect()`` on every call (why the numpy version exists).

Run: ``.venv/bin/python bench/bench_analyze.py``; prints a table (wall and CPU seconds of this
process, best of 3, and the load average) and writes bench/results/analyze.json. Another
tree's ``analyze`` on the same table: ``PYTHONPATH=/path/to/tree python bench/bench_analyze.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import numpy as np
from statsmodels.stats.multitest import multipletests

from loopexp.analysis.analyze import analyze
from loopexp.design.spec import ExperimentSpec
from loopexp.metrics.definitions import METRICS
from loopexp.metrics.engine import ALL_SEGMENTS, GroupStats, MetricTable
from loopexp.stats import adjust_pvalues

ROOT = Path(__file__).resolve().parent.parent
SEGMENTS = ["prospect", "new_customer", "existing_customer", "inactive"]
N_CHALLENGERS = 20


def build(rng: np.random.Generator, n_metrics: int = 11) -> tuple[ExperimentSpec, MetricTable]:
    """A spec with 20 challengers and ``n_metrics`` metrics, and their sufficient statistics."""
    metrics = [m for m in METRICS if m != "delivery_rate"][:n_metrics]
    ids = ["control", *(f"v{i:02d}" for i in range(N_CHALLENGERS))]
    spec = ExperimentSpec.model_validate(
        {
            "name": "bench",
            "campaign": "bench",
            "test_type": "subject_line",
            "salt": "s",
            "control": "control",
            "variants": [{"id": i} for i in ids],
            "primary_metric": metrics[0],
            "secondary_metrics": metrics[1:],
        }
    )
    stats = []
    n = 5_000
    for seg in [ALL_SEGMENTS, *SEGMENTS]:
        size = n * 4 if seg == ALL_SEGMENTS else n
        for v in ids:
            for name in metrics:
                if METRICS[name].kind == "proportion":
                    x = float(rng.binomial(size, 0.05))
                    stats.append(GroupStats(name, v, seg, size, x, x))
                else:
                    buyers = int(rng.binomial(size, 0.02))
                    values = rng.lognormal(3, 1.5, buyers)
                    stats.append(
                        GroupStats(name, v, seg, size, values.sum(), float((values**2).sum()))
                    )
    return spec, MetricTable(
        stats=stats, assigned=dict.fromkeys(ids, n * 4), events=0, quarantined=0
    )


def best_of(fn, repeat: int = 3) -> float:
    """Fastest wall time of ``repeat`` calls, in seconds."""
    return best_of_both(fn, repeat)[0]


def best_of_both(fn, repeat: int = 3) -> tuple[float, float]:
    """Fastest wall and fastest CPU time (this process) of ``repeat`` calls, in seconds."""
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    """Time both and write bench/results/analyze.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=11, help="metrics per arm (up to 12)")
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    spec, table = build(rng, opts.metrics)
    results = analyze(spec, table)
    n_comparisons = len(results.comparisons) + sum(len(s.comparisons) for s in results.segments)
    load = os.getloadavg()[0]
    t_analyze, cpu_analyze = best_of_both(lambda: analyze(spec, table))

    families = [rng.uniform(size=20) for _ in range(50)]  # 50 families of 20 p-values
    t_numpy = best_of(lambda: [adjust_pvalues(f, "holm") for f in families])
    t_statsmodels = best_of(lambda: [multipletests(f, method="holm") for f in families])
    gc.collect()
    out = {
        "comparisons": n_comparisons,
        "analyze_seconds": round(t_analyze, 4),
        "analyze_cpu_seconds": round(cpu_analyze, 4),
        "load_average": round(load, 2),
        "per_comparison_ms": round(1000 * t_analyze / n_comparisons, 4),
        "holm_50_families_numpy_seconds": round(t_numpy, 5),
        "holm_50_families_statsmodels_seconds": round(t_statsmodels, 5),
        "statsmodels_over_numpy": round(t_statsmodels / t_numpy, 1),
    }
    for key, value in out.items():
        print(f"{key:40s} {value}")
    path = ROOT / "bench" / "results" / "analyze.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
