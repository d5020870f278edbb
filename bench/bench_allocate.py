"""Benchmark of the budget allocation engine (training/core/allocate.py) against scipy, in one run.

  1. latency: `allocate` on random 10-channel curve sets (S-shaped, concave, mixed; no, loose and tight
     bounds), BENCH_CALLS (600) calls, p50 and p99 wall time and p50 CPU time (the machine may be
     shared: CPU time is what one call costs); the same for 2 and 5 channels.
  2. quality: BENCH_CASES (8) random problems per curve type and bounds kind, 2 to 10 channels, each solved by
     the engine and by the scipy reference (bench/allocate_reference.py: brute force for 2-3 channels, SLSQP
     multi-start and differential_evolution); the gap is (scipy - engine) / scipy in total media revenue
     (negative: the engine found more). The scipy solve time is the baseline: the ratio is scipy / engine.
Target: p50 <= 20 ms for 10 channels; every gap <= 0.1%.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.allocate_reference import (  # noqa: E402
    random_curve_set,
    reference_optimum,
    total_revenue,
)
from training.core.allocate import allocate  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "600"))
CASES = int(os.environ.get("BENCH_CASES", "8"))
KINDS = ("s_shaped", "concave", "mixed")
BOUNDS = ("none", "loose", "tight")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values."""
    return float(np.percentile(np.array(values), q))


def latency(channels: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """p50 and p99 wall ms, and p50 CPU ms, of `allocate` over CALLS calls on `channels`-channel curve sets."""
    problems = [
        random_curve_set(rng, KINDS[i % 3], channels, BOUNDS[(i // 3) % 3])
        for i in range(max(9, CALLS // 20))
    ]
    times, cpu = [], []
    for i in range(CALLS):
        p = problems[i % len(problems)]
        start, start_cpu = time.perf_counter(), time.process_time()
        allocate(p.curves, p.budget, bounds=p.bounds or None, current_spend=p.current)
        times.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return percentile(times, 50), percentile(times, 99), percentile(cpu, 50)


def main() -> None:
    """Print the latency and quality tables."""
    rng = np.random.default_rng(20261202)
    print(f"allocate latency ({CALLS} calls each)")
    print(f"{'channels':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50 CPU ms':>11}")
    for channels in (2, 5, 10):
        p50, p99, cpu50 = latency(channels, rng)
        print(f"{channels:>9} {p50:8.2f} {p99:8.2f} {cpu50:11.2f}")

    print(f"\nquality vs scipy ({CASES} problems per curve type and bounds kind, 2-10 channels)")
    header = f"{'curves':>9} {'bounds':>6} {'n':>3} {'max gap':>10} {'median gap':>11} {'engine ms':>10} {'scipy ms':>9} {'ratio':>6}"
    print(header)
    worst = -np.inf
    for kind in KINDS:
        for bounds in BOUNDS:
            gaps, ours, theirs = [], [], []
            for case in range(CASES):
                channels = 2 + (case * 7 + len(kind)) % 9
                problem = random_curve_set(rng, kind, channels, bounds)
                start = time.perf_counter()
                reference, _ = reference_optimum(problem, rng)
                theirs.append((time.perf_counter() - start) * 1e3)
                start = time.perf_counter()
                result = allocate(problem.curves, problem.budget, bounds=problem.bounds or None)
                ours.append((time.perf_counter() - start) * 1e3)
                gaps.append((reference - total_revenue(problem, result.allocation)) / reference)
            worst = max(worst, max(gaps))
            engine_ms, scipy_ms = statistics.median(ours), statistics.median(theirs)
            print(
                f"{kind:>9} {bounds:>6} {CASES:>3} {max(gaps):10.2e} {statistics.median(gaps):11.2e} "
                f"{engine_ms:10.2f} {scipy_ms:9.0f} {scipy_ms / engine_ms:6.0f}x"
            )
    print(f"\nworst gap over all {CASES * len(KINDS) * len(BOUNDS)} problems: {worst:.2e} (target <= 1e-3)")


if __name__ == "__main__":
    main()
